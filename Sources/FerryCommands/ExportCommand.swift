import ArgumentParser
import AsyncHTTPClient
import Foundation
import HelmCharts
import OCIBundle
import OCICore
import OCIRegistryClient

/// `ferry export`: images from any registry into one verified bundle.
public struct ExportCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Pull images from registries into one verified bundle (an OCI image-layout tar).",
        discussion: """
            Every image is pulled with all its platforms (or the ones --platform names), every byte is \
            checked against its digest while it streams, each blob is fetched once however many images \
            share it, and the bundle appears under its final name only when complete.

            Image lists: a text file (one reference a line, # comments) or YAML, either
              images: [nginx:1.25, quay.io/coreos/etcd:v3.5.9]
            or mindthegap's form:
              docker.io:
                images:
                  library/nginx: ["1.25", "1.26"]

            Whole repositories: --all-tags makes a reference without a tag mean every tag (filtered \
            by --tags-regex, --tags-semver '>=1.2 <2', --tags-latest N, --exclude-tags), and in YAML
              images:
                - name: quay.io/org/app
                  allTags: true
                  tagsSemver: ">=1.2 <2"

            image-syncer's files as they are: --images images.json ({"SOURCE": "DESTINATION"}; the \
            destination is the name the bundle carries) and --auth auth.json (credentials and \
            insecure per host).

            Helm charts from classic chart repositories (index.yaml over HTTPS, with the same CA, \
            certs.d, --insecure-registry and credential rules as registries) are named in a text list as
              chart https://charts.example.com/stable nginx 1.2.3
            or in YAML as
              charts:
                - {repo: https://charts.example.com/stable, name: nginx, version: 1.2.3}
            Each archive is checked against its index's sha256 and carried as the OCI artifact \
            `helm push` makes, under charts.example.com/stable/nginx:1.2.3 (`+` in a version becomes \
            `_`), so `helm pull oci://APPLIANCE/charts.example.com/stable/nginx --version 1.2.3` works \
            on the isolated side. --chart-images report lists the images a chart names (values.yaml \
            image maps, literal references in templates, args and env) and what only a template \
            expression names; --chart-images add exports them too.

            References are read the way docker reads them: `nginx` is docker.io/library/nginx:latest; \
            `name:tag@sha256:...` pins the digest and keeps the tag as the image's name.

            Credentials come from --creds, containers' auth.json ($REGISTRY_AUTH_FILE or \
            $XDG_RUNTIME_DIR/containers/auth.json) and docker's config.json ($DOCKER_CONFIG or \
            ~/.docker). A registry with its own CA is trusted from --ca-file or from \
            /etc/containers/certs.d/HOST:PORT/*.crt and /etc/docker/certs.d/HOST:PORT/*.crt.

            Examples:
              ferry export -f images.txt -o site.bundle.tar
              ferry export nginx:1.25 redis:7 --platform linux/amd64,linux/arm64 -o web.tar
              ferry export -f images.yaml -o site.tar --ca-file corp-ca.pem --json > summary.json
              ferry export -f images.txt -o site.tar --volume-size 4G   # site.vol001.tar, site.vol002.tar, ...

            With --volume-size, the bundle is written as volumes of at most that size, each a tar \
            that `ferry verify` checks alone and `ferry-appliance import` takes in any order, over \
            several runs; the images appear when the last volume is in. Every volume carries the \
            signed bundle manifest, index.json and all image manifests; configs and layers are \
            spread over the volumes whole, and one larger than a volume is cut into parts.
            """
    )

    @OptionGroup var selection: ImageSelection

    @Option(name: .shortAndLong, help: "Where to write the bundle (a .tar file).")
    var output: String

    @Option(
        name: .customLong("load-platform"),
        help: """
            The platform of multi-platform images that `docker load` and `podman load` take from the \
            bundle (its manifest.json). Every platform stays in the OCI layout.
            """)
    var loadPlatform: String = "linux/amd64"

    @Option(
        name: .customLong("volume-size"),
        help: "Write volumes of at most this size (4G, 700M, 4GB, bytes): NAME.vol001.tar, NAME.vol002.tar, ...")
    var volumeSize: ByteSize?

    @Flag(
        name: .customLong("no-referrers"),
        help: """
            Leave out the images' signatures, attestations and SBOMs (by default each image's \
            cosign tags sha256-HEX.sig/.att/.sbom and its OCI referrers tag sha256-HEX are carried).
            """)
    var noReferrers = false

    @Option(
        name: .customLong("referrers-type"),
        help: """
            Carry only these referrers (repeatable): signature, attestation, sbom, referrers (by \
            cosign's and the referrers schema's tags), or an artifact type the registry's referrers \
            API reports, e.g. application/spdx+json.
            """)
    var referrerTypes: [String] = []

    @Option(
        name: .customLong("verify-signatures"),
        help: """
            Refuse images without a cosign signature by this key (repeatable; ECDSA P-256 or \
            Ed25519 public key in PEM): checked offline before the bundle is written.
            """)
    var signatureKeyFiles: [String] = []

    @Option(
        name: .customLong("chart-images"),
        help: """
            For the charts listed: report the images each names (and what could not be resolved), \
            or add them to the export (report|add).
            """)
    var chartImages: Exporter.ChartImagesMode?

    @Option(help: "Blobs downloaded at once.")
    var parallel: Int = 6

    @Option(help: "Cache of verified blobs, reused across exports (default: $XDG_CACHE_HOME/ferry or ~/.cache/ferry).")
    var cache: String?

    @Flag(
        name: .customLong("no-cache"),
        help: """
            Keep no blobs for later exports: each layer is downloaded straight into the bundle and \
            written once (a killed export still resumes from BUNDLE.partial). For one-off exports on \
            small disks.
            """)
    var noCache = false

    @OptionGroup var registryOptions: RegistryOptions

    @Option(help: "Progress display: auto (a bar on a terminal, plain lines otherwise), bar, plain, none.")
    var progress: ProgressReporter.Mode = .auto

    @Option(name: .customLong("sign-key"), help: "Sign the bundle with this Ed25519 private key (from `ferry keygen`).")
    var signKey: String?

    @Flag(help: "Print a JSON summary on standard output.")
    var json = false

    public init() {}

    public func validate() throws {
        guard parallel >= 1 && parallel <= 64 else { throw ValidationError("--parallel must be between 1 and 64") }
        guard !output.isEmpty else { throw ValidationError("--output must name a file") }
        if let problem = SystemError.notAFileToWrite(output) { throw ValidationError("--output \(problem)") }
        if noReferrers && !signatureKeyFiles.isEmpty {
            throw ValidationError("--verify-signatures needs the signatures: drop --no-referrers")
        }
        if noReferrers && !referrerTypes.isEmpty {
            throw ValidationError("--referrers-type keeps some referrers; --no-referrers leaves them all out: give one")
        }
    }

    public func run() async throws {
        try await reportingErrors {
            let (requests, charts) = try selection.load()
            if chartImages != nil && charts.isEmpty {
                throw ValidationError("--chart-images needs charts in a list (chart REPO_URL NAME VERSION)")
            }
            let signingKey = try signKey.map { try SigningKey(pemFile: $0) }
            let platforms = try selection.platforms()
            let credentialStore = try registryOptions.credentialStore()
            // A password without a host goes to one registry only: never to every registry named,
            // nor to the servers a chart repository's index or a chart's images name.
            let registries = Set(requests.map(\.reference.registry))
            if credentialStore.explicitForAll != nil && (registries.count > 1 || !charts.isEmpty) {
                throw ValidationError(
                    charts.isEmpty
                        ? "--creds without a host, with images from \(registries.count) registries: name it, --creds HOST=USER:PASSWORD"
                        : "--creds without a host, with charts in the list: name the host, --creds HOST=USER:PASSWORD")
            }
            let reporter = ProgressReporter(mode: json && progress == .auto ? .plain : progress)
            var options = Exporter.Options(
                requests: requests, output: output, platforms: platforms, parallel: parallel,
                cacheDirectory: noCache ? nil : cache ?? Self.defaultCacheDirectory(),
                creationTime: Self.creationTime(),
                signingKey: signingKey, loadPlatform: try Platform(parsing: loadPlatform),
                against: try selection.deltaBase(), volumeSize: volumeSize?.bytes, referrers: !noReferrers,
                referrerTypes: referrerTypes.isEmpty ? nil : Set(referrerTypes),
                signatureKeys: try signatureKeyFiles.map { try ImageSignatureKey(pemFile: $0) })
            options.charts = charts
            options.chartImages = chartImages
            let summary = try await registryOptions.withClient(credentials: credentialStore) { client in
                try await Exporter(client: client, progress: reporter).run(options)
            }
            if json {
                try printJSON(summary)
            } else {
                let mib = Double(summary.bundleSize) / 1_048_576
                print(
                    String(
                        format: "Wrote %@: %d image(s), %d blob(s), %.1f MiB (%d downloaded, %d from cache%@) in %.1fs",
                        summary.bundle, summary.images.count, summary.blobs, mib, summary.downloadedBlobs,
                        summary.cachedBlobs,
                        (summary.resumedBlobs.map { ", \($0) from the interrupted run" } ?? "")
                            + (summary.resumedBytes.map {
                                ", \(ProgressReporter.bytes($0)) of blobs it was part way through"
                            } ?? ""),
                        summary.seconds))
                if let volumes = summary.volumes {
                    print("\(volumes.count) volume(s) of set \(summary.bundleDigest) (each with its .sha256):")
                    for volume in volumes {
                        print("  \(volume.path)  \(ProgressReporter.bytes(volume.size))")
                    }
                } else {
                    print("sha256 \(summary.bundleDigest) (also in \(summary.bundle).sha256)")
                }
                if let signer = summary.signedBy { print("signed by \(signer)") }
                for chart in summary.charts ?? [] { Self.printChart(chart, added: chartImages == .add) }
                if let base = summary.base, let external = summary.externalBlobs, let saved = summary.savedBytes {
                    print(
                        "delta against \(base): \(external) blob(s), \(ProgressReporter.bytes(saved)) left to the site")
                }
            }
        }
    }

    static func printChart(_ chart: Exporter.ChartSummary, added: Bool) {
        print("chart \(chart.chart) -> \(chart.reference)")
        guard let images = chart.images else { return }
        print("  \(images.count) image(s)\(added ? ", exported" : ""):")
        for image in images { print("    \(image.reference)  (\(image.origin))") }
        let unresolved = chart.unresolved ?? []
        if !unresolved.isEmpty {
            print("  \(unresolved.count) not resolved (named by a template expression only):")
            for item in unresolved { print("    \(item.text)  (\(item.origin))") }
        }
    }

    static func defaultCacheDirectory() -> String {
        let environment = ProcessInfo.processInfo.environment
        if let xdg = environment["XDG_CACHE_HOME"], !xdg.isEmpty { return "\(xdg)/ferry" }
        return "\(environment["HOME"] ?? NSTemporaryDirectory())/.cache/ferry"
    }

    /// `SOURCE_DATE_EPOCH` when set (reproducible bundles), else now.
    static func creationTime() -> Int64 {
        if let value = ProcessInfo.processInfo.environment["SOURCE_DATE_EPOCH"], let seconds = Int64(value) {
            return seconds
        }
        return Int64(Date().timeIntervalSince1970)
    }
}

extension ProgressReporter.Mode: ExpressibleByArgument {}
extension Exporter.ChartImagesMode: ExpressibleByArgument {}
