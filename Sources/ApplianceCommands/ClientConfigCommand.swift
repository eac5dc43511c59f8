import ArgumentParser
import Foundation
import OCICore
import OCIRegistryServer
import OCIStore
import RegistryProxy

/// `ferry-appliance client-config HOST:PORT`: what each client needs to trust the appliance,
/// ready to paste.
struct ClientConfigCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "client-config",
        abstract: "Print, ready to paste, what docker, containerd, podman and the system trust store need.",
        discussion: """
            Run it on the appliance host; paste each part on the client hosts (as root). With the \
            operator's own certificate (--tls-cert), give --ca with the CA that issued it.

            Clients keep their image names: for every source registry the store holds (docker.io, \
            registry.k8s.io, ...; add others with --upstream) the output also makes the appliance \
            that registry's mirror, so docker.io/library/nginx:1.25 in a manifest pulls from the \
            appliance unchanged: containerd hosts.toml per registry, podman/CRI-O registries.conf \
            mirrors, k3s/rke2 registries.yaml, and docker's registry-mirrors (Docker Hub only; the \
            appliance answers library/nginx from docker.io/library/nginx).

            Example: ferry-appliance client-config registry.plant.example:5000 --for containerd
            """)

    @Argument(help: "The appliance as clients reach it: HOST:PORT.")
    var address: String

    @OptionGroup var store: StoreOptions

    @Option(name: .customLong("for"), help: "Only this client: docker, containerd, podman, k3s, rke2 or system.")
    var client: Client?

    @Option(name: .customLong("upstream"), help: "Another source registry to mirror, HOST[:PORT] (repeatable).")
    var upstreams: [String] = []

    @Option(help: "The CA certificate to hand out (default: the appliance's own CA).")
    var ca: String?

    enum Client: String, ExpressibleByArgument, CaseIterable {
        case docker, containerd, podman, k3s, rke2, system
    }

    func run() async throws {
        try await reportingApplianceErrors {
            guard let colon = address.lastIndex(of: ":"), Int(address[address.index(after: colon)...]) != nil,
                !address.contains("/")
            else { throw ValidationError("\(address): expected HOST:PORT") }
            let pem: String
            if let ca {
                guard let text = try? String(contentsOfFile: ca, encoding: .utf8) else {
                    throw ValidationError("\(ca): cannot read the CA certificate")
                }
                pem = text
            } else {
                pem = try ApplianceCertificates(dataDirectory: store.resolved).authorityPEM()
            }
            let clients = client.map { [$0] } ?? Client.allCases
            let repositories = try RegistryStore(root: store.resolved).repositories(after: nil, limit: nil)
            // The pull-through cache's upstreams are mirrored too.
            let proxied = (try store.configuration().0.proxy?.upstreams ?? []).compactMap {
                try? ProxyUpstream(url: $0.url, isDefault: false, ttl: 0).registry
            }
            let registries = Set(ClientConfiguration.upstreams(in: repositories.map(\.value)))
                .union(upstreams).union(proxied).sorted()
            print(
                clients.map {
                    ClientConfiguration.snippet(for: $0.rawValue, address: address, caPEM: pem, upstreams: registries)
                }.joined(separator: "\n"))
        }
    }
}
