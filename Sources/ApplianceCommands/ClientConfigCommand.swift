import ArgumentParser
import Foundation
import OCICore
import OCIRegistryServer
import OCIStore

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
            let registries = Set(ClientConfiguration.upstreams(in: repositories.map(\.value)))
                .union(upstreams).sorted()
            print(
                clients.map {
                    ClientConfiguration.snippet(for: $0.rawValue, address: address, caPEM: pem, upstreams: registries)
                }.joined(separator: "\n"))
        }
    }
}

/// The text of each client's configuration (pure, for tests).
enum ClientConfiguration {
    /// The source registries of the store's repositories (first components), `_` turned back into `:`.
    static func upstreams(in repositories: [String]) -> [String] {
        Set(
            repositories.compactMap { name -> String? in
                guard let first = name.split(separator: "/").first.map(String.init), name.contains("/"),
                    first.contains(".") || first.contains("_") || first == "localhost"
                else { return nil }
                return Self.upstream(served: first)
            }
        ).sorted()
    }

    static func upstream(served: String) -> String { Reference.registry(servedHost: served) }
    static func served(_ upstream: String) -> String { Reference.servedHost(upstream) }

    static func snippet(for client: String, address: String, caPEM: String, upstreams: [String] = []) -> String {
        let pem = caPEM.hasSuffix("\n") ? caPEM : caPEM + "\n"
        func install(_ path: String) -> String {
            "mkdir -p \(directory(path)) && cat > \(path) <<'EOF'\n\(pem)EOF\n"
        }
        switch client {
        case "docker":
            return """
                # docker: trust the appliance's CA for \(address) (no daemon restart needed)
                \(install("/etc/docker/certs.d/\(address)/ca.crt"))
                # docker: the appliance as Docker Hub mirror (docker mirrors Docker Hub only); merge
                # into an existing /etc/docker/daemon.json, then restart docker
                cat > /etc/docker/daemon.json <<'EOF'
                {"registry-mirrors": ["https://\(address)"]}
                EOF

                """
        case "containerd":
            return """
                # containerd (and nerdctl, k3s/rke2 use their own paths): the CA and a hosts.toml.
                # CRI needs config_path = "/etc/containerd/certs.d" under
                # [plugins."io.containerd.grpc.v1.cri".registry] in /etc/containerd/config.toml.
                \(install("/etc/containerd/certs.d/\(address)/ca.crt"))
                cat > /etc/containerd/certs.d/\(address)/hosts.toml <<'EOF'
                server = "https://\(address)"

                [host."https://\(address)"]
                  capabilities = ["pull", "resolve"]
                  ca = "/etc/containerd/certs.d/\(address)/ca.crt"
                EOF

                """
                    + upstreams.map { upstream in
                        """
                        # the appliance as \(upstream)'s mirror: \(upstream)/NAME pulls from \(address)/\(served(upstream))/NAME
                        mkdir -p /etc/containerd/certs.d/\(upstream) && cat > /etc/containerd/certs.d/\(upstream)/hosts.toml <<'EOF'
                        server = "https://\(upstream)"

                        [host."https://\(address)/v2/\(served(upstream))"]
                          capabilities = ["pull", "resolve"]
                          ca = "/etc/containerd/certs.d/\(address)/ca.crt"
                          override_path = true
                        EOF

                        """
                    }.joined()
        case "podman":
            return """
                # podman, buildah, skopeo and CRI-O: the CA, and the registry entry
                \(install("/etc/containers/certs.d/\(address)/ca.crt"))
                mkdir -p /etc/containers/registries.conf.d && cat > /etc/containers/registries.conf.d/ferry.conf <<'EOF'
                [[registry]]
                location = "\(address)"
                insecure = false
                """
                    + upstreams.map { upstream in
                        """

                        [[registry]]
                        prefix = "\(upstream)"
                        location = "\(upstream)"
                        [[registry.mirror]]
                        location = "\(address)/\(served(upstream))"
                        """
                    }.joined() + "\nEOF\n"
        case "k3s", "rke2":
            let mirrors = upstreams.map { upstream in
                """
                  "\(upstream)":
                    endpoint:
                      - "https://\(address)"
                    rewrite:
                      "^(.*)$": "\(served(upstream))/$1"

                """
            }.joined()
            return """
                # \(client): the appliance as mirror of every source registry (restart \(client) after)
                \(install("/etc/rancher/\(client)/ferry-ca.crt"))cat > /etc/rancher/\(client)/registries.yaml <<'EOF'
                mirrors:
                \(mirrors)configs:
                  "\(address)":
                    tls:
                      ca_file: /etc/rancher/\(client)/ferry-ca.crt
                EOF

                """
        default:
            return """
                # system trust store (curl, Go programs, and clients without a per-registry CA)
                # Debian/Ubuntu:
                \(install("/usr/local/share/ca-certificates/ferry-appliance.crt"))update-ca-certificates
                # RHEL/Fedora/SUSE:
                #   cp /usr/local/share/ca-certificates/ferry-appliance.crt /etc/pki/ca-trust/source/anchors/ && update-ca-trust

                """
        }
    }

    static func directory(_ path: String) -> String {
        String(path[..<(path.lastIndex(of: "/") ?? path.endIndex)])
    }
}
