// swift-tools-version:6.1
// Ferry: carry container images across an air gap.
//
// Targets are layered; dependencies point down only (checked by .ci/check-layers.py):
//   CLibCrypto, CArchive, CCrypt, CSQLite   C libraries from Debian (libssl-dev, libarchive-dev, libcrypt-dev,
//                                           libsqlite3-dev)
//   OCICore                         spec types, digests, references, platforms. No I/O.
//   OCITar, OCIStore                streaming tar over libarchive; the registry store (blob files + SQLite)
//   OCIRegistryClient               Distribution API client (auth, retries, verified blob streams)
//   OCIRegistryServer               Distribution API server over the store (Hummingbird, TLS, generated CA)
//   OCIBundle                       the bundle format (OCI image layout in a tar + bundle manifest)
//   HelmCharts                      chart repositories' index.yaml, chart archives as OCI artifacts, the
//                                   images a chart names
//   ApplianceConsole                the web console under /ui/ (swift-mustache templates)
//   RegistryProxy                   the pull-through cache: the server asks it, it fetches with the client
//   FerryCommands, ApplianceCommands  subcommands as library code
//   ferry, ferry-appliance          thin executables
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny")
]

let package = Package(
    name: "Ferry",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "ferry", targets: ["ferry"]),
        .executable(name: "ferry-appliance", targets: ["ferry-appliance"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1", traits: []),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/hummingbird-project/swift-mustache.git", from: "2.1.1"),
    ],
    targets: [
        .systemLibrary(name: "CLibCrypto", path: "Sources/CLibCrypto", providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CLinux", path: "Sources/CLinux"),
        .systemLibrary(name: "CArchive", path: "Sources/CArchive", providers: [.apt(["libarchive-dev"])]),
        .systemLibrary(name: "CCrypt", path: "Sources/CCrypt", providers: [.apt(["libcrypt-dev"])]),
        .systemLibrary(name: "CSQLite", path: "Sources/CSQLite", providers: [.apt(["libsqlite3-dev"])]),
        .target(name: "OCICore", dependencies: ["CLibCrypto", "CLinux"], swiftSettings: swiftSettings),
        .target(name: "OCITar", dependencies: ["CArchive"], swiftSettings: swiftSettings),
        .target(name: "OCIStore", dependencies: ["OCICore", "CSQLite"], swiftSettings: swiftSettings),
        .target(
            name: "OCIRegistryClient",
            dependencies: [
                "OCICore",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "OCIRegistryServer",
            dependencies: [
                "OCICore", "OCIStore", "CCrypt",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(name: "OCIBundle", dependencies: ["CLibCrypto", "OCICore", "OCITar"], swiftSettings: swiftSettings),
        .target(
            name: "HelmCharts", dependencies: ["OCICore", "OCITar", .product(name: "Yams", package: "Yams")],
            swiftSettings: swiftSettings),
        .target(
            name: "ApplianceConsole",
            dependencies: [
                "OCICore", "OCIStore", "OCIRegistryServer",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Mustache", package: "swift-mustache"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "RegistryProxy",
            dependencies: [
                "OCICore", "OCIStore", "OCIRegistryClient", "OCIRegistryServer",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "FerryCommands",
            dependencies: [
                "OCICore", "OCIStore", "OCIRegistryClient", "OCIBundle", "OCITar", "HelmCharts",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Yams", package: "Yams"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "ApplianceCommands",
            dependencies: [
                "OCICore", "OCIStore", "OCIBundle", "OCIRegistryServer", "OCITar", "ApplianceConsole", "RegistryProxy",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Yams", package: "Yams"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(name: "ferry", dependencies: ["FerryCommands"], swiftSettings: swiftSettings),
        .executableTarget(
            name: "ferry-appliance", dependencies: ["ApplianceCommands"], swiftSettings: swiftSettings),

        .testTarget(name: "OCICoreTests", dependencies: ["OCICore"], swiftSettings: swiftSettings),
        .testTarget(name: "OCITarTests", dependencies: ["OCITar"], swiftSettings: swiftSettings),
        .testTarget(name: "OCIStoreTests", dependencies: ["OCIStore", "OCICore"], swiftSettings: swiftSettings),
        .testTarget(
            name: "OCIRegistryClientTests", dependencies: ["OCIRegistryClient", "OCICore"],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "OCIRegistryServerTests",
            dependencies: [
                "OCIRegistryServer", "OCICore", "OCIStore",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "X509", package: "swift-certificates"),
            ],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "OCIBundleTests", dependencies: ["OCIBundle", "OCICore", "OCITar"], swiftSettings: swiftSettings),
        .testTarget(
            name: "ApplianceConsoleTests", dependencies: ["ApplianceConsole", "OCIRegistryServer", "OCIStore"],
            swiftSettings: swiftSettings),
        .testTarget(name: "HelmChartsTests", dependencies: ["HelmCharts", "OCICore"], swiftSettings: swiftSettings),
        .testTarget(
            name: "RegistryProxyTests", dependencies: ["RegistryProxy", "OCICore"], swiftSettings: swiftSettings),
        .testTarget(
            name: "FerryCommandsTests", dependencies: ["FerryCommands", "OCICore"], swiftSettings: swiftSettings),
        .testTarget(
            name: "EndToEndTests", dependencies: ["OCICore", "OCITar", "OCIBundle"],
            exclude: [
                "Support/token_server.py", "Support/upstream_proxy.py", "Support/bundle_mutator.py",
                "Support/static_server.py", "Support/console_browser.py",
            ],
            swiftSettings: swiftSettings),
    ]
)
