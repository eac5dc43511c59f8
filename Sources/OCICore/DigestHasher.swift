import CLibCrypto

/// Incremental SHA-256 / SHA-512 over OpenSSL's libcrypto, which uses the CPU's SHA extensions.
///
/// A value type around a reference-counted context; copying one and updating both is not supported
/// (it is meant to be owned by one streaming loop).
public struct DigestHasher {
    private final class Context {
        let pointer: OpaquePointer?
        init(_ algorithm: DigestAlgorithm) {
            pointer = EVP_MD_CTX_new()
            let md = algorithm == .sha256 ? EVP_sha256() : EVP_sha512()
            EVP_DigestInit_ex(pointer, md, nil)
        }
        deinit { EVP_MD_CTX_free(pointer) }
    }

    public let algorithm: DigestAlgorithm
    private let context: Context

    public init(_ algorithm: DigestAlgorithm) {
        self.algorithm = algorithm
        self.context = Context(algorithm)
    }

    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        EVP_DigestUpdate(context.pointer, base, bytes.count)
    }

    /// Finishes the hash. The hasher must not be used afterwards.
    public func finalize() -> Digest {
        var output = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        EVP_DigestFinal_ex(context.pointer, &output, &length)
        return Digest(algorithm: algorithm, bytes: Array(output.prefix(Int(length))))
    }
}
