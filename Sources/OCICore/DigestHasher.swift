import CLibCrypto

/// Incremental SHA-256 / SHA-512 over OpenSSL's libcrypto, which uses the CPU's SHA extensions.
///
/// A value: copies hash on independently. The context is shared until a copy is updated (copy on
/// write, so the usual single owner never copies), and finishing works on a copy of it, so a
/// hasher may be finished and still go on.
public struct DigestHasher {
    private final class Context {
        let pointer: OpaquePointer?
        init(_ algorithm: DigestAlgorithm) {
            pointer = EVP_MD_CTX_new()
            let md = algorithm == .sha256 ? EVP_sha256() : EVP_sha512()
            EVP_DigestInit_ex(pointer, md, nil)
        }
        init(copying other: Context) {
            pointer = EVP_MD_CTX_new()
            EVP_MD_CTX_copy_ex(pointer, other.pointer)
        }
        deinit { EVP_MD_CTX_free(pointer) }
    }

    public let algorithm: DigestAlgorithm
    private var context: Context

    public init(_ algorithm: DigestAlgorithm) {
        self.algorithm = algorithm
        self.context = Context(algorithm)
    }

    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        if !isKnownUniquelyReferenced(&context) { context = Context(copying: context) }
        EVP_DigestUpdate(context.pointer, base, bytes.count)
    }

    /// The digest of the bytes so far.
    public func finalize() -> Digest {
        let final = Context(copying: context)
        var output = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        EVP_DigestFinal_ex(final.pointer, &output, &length)
        return Digest(algorithm: algorithm, bytes: Array(output.prefix(Int(length))))
    }
}
