import ArgumentParser
import Foundation
import OCIBundle
import OCICore
import OCIStore

/// `ferry keygen`: an Ed25519 key pair for signing bundles.
public struct KeygenCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "keygen",
        abstract: "Write an Ed25519 key pair for signing bundles (PREFIX.key, mode 0600, and PREFIX.pub).",
        discussion: """
            Keep PREFIX.key on the connected side (`ferry export --sign-key`, `ferry sign`); give \
            PREFIX.pub to the isolated side (`ferry verify --trust-key`). Both are PEM files that \
            `openssl pkey` reads.
            """
    )

    @Option(name: .shortAndLong, help: "Path prefix of the two files.")
    var output: String = "ferry-signing"

    @Flag(help: "Overwrite existing files.")
    var force = false

    public init() {}

    public func run() async throws {
        try await reportingErrors {
            let privatePath = output + ".key"
            let publicPath = output + ".pub"
            for path in [privatePath, publicPath] where !force && FileManager.default.fileExists(atPath: path) {
                throw ValidationError("\(path) exists; pass --force to overwrite it")
            }
            let key = try SigningKey.generate()
            // Each file is written whole under a temporary name with its mode (0600 for the
            // private key) and renamed over the old one (--force): a new file, never an old one
            // rewritten or a symbolic link followed.
            do {
                try FileSystem.replace(privatePath, with: Array(try key.pem().utf8), mode: 0o600)
                try FileSystem.replace(publicPath, with: Array(key.publicKey.pem.utf8), mode: 0o644)
            } catch let error as StoreError {
                throw ValidationError("cannot write the key: \(error)")
            }
            print("private key \(privatePath) (keep it secret)")
            print("public key  \(publicPath)")
            print("key id      \(key.publicKey.keyID)")
        }
    }
}

/// `ferry sign`: sign an existing bundle without changing its blobs.
public struct SignCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "sign",
        abstract: "Sign an existing bundle (verifies it first; blobs, index.json and manifest keep their bytes).",
        discussion: "Replaces any earlier signature and rewrites BUNDLE.sha256."
    )

    @Argument(help: "The bundle.")
    var bundle: String

    @Option(help: "The Ed25519 private key (from `ferry keygen`).")
    var key: String

    public init() {}

    public func run() async throws {
        try await reportingErrors {
            let signingKey = try SigningKey(pemFile: key)
            let bundle = self.bundle
            let result = try await NIOThreadPoolRunner.run { try BundleSigner.sign(bundle: bundle, with: signingKey) }
            print("signed \(bundle) with \(result.signature.keyID); sha256 \(result.tar)")
        }
    }
}
