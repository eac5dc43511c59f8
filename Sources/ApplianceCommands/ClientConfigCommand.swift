import ArgumentParser
import Foundation
import OCIRegistryServer

/// `ferry-appliance client-config HOST:PORT`: what each client needs to trust the appliance,
/// ready to paste.
struct ClientConfigCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "client-config",
        abstract: "Print, ready to paste, what docker, containerd, podman and the system trust store need.",
        discussion: """
            Run it on the appliance host; paste each part on the client hosts (as root). With the \
            operator's own certificate (--tls-cert), give --ca with the CA that issued it.

            Example: ferry-appliance client-config registry.plant.example:5000 --for containerd
            """)

    @Argument(help: "The appliance as clients reach it: HOST:PORT.")
    var address: String

    @OptionGroup var store: StoreOptions

    @Option(name: .customLong("for"), help: "Only this client: docker, containerd, podman or system.")
    var client: Client?

    @Option(help: "The CA certificate to hand out (default: the appliance's own CA).")
    var ca: String?

    enum Client: String, ExpressibleByArgument, CaseIterable {
        case docker, containerd, podman, system
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
            print(
                clients.map { ClientConfiguration.snippet(for: $0.rawValue, address: address, caPEM: pem) }
                    .joined(separator: "\n"))
        }
    }
}

/// The text of each client's configuration (pure, for tests).
enum ClientConfiguration {
    static func snippet(for client: String, address: String, caPEM: String) -> String {
        let pem = caPEM.hasSuffix("\n") ? caPEM : caPEM + "\n"
        func install(_ path: String) -> String {
            "mkdir -p \(directory(path)) && cat > \(path) <<'EOF'\n\(pem)EOF\n"
        }
        switch client {
        case "docker":
            return """
                # docker: trust the appliance's CA for \(address) (no daemon restart needed)
                \(install("/etc/docker/certs.d/\(address)/ca.crt"))
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
        case "podman":
            return """
                # podman, buildah, skopeo and CRI-O: the CA, and the registry entry
                \(install("/etc/containers/certs.d/\(address)/ca.crt"))
                mkdir -p /etc/containers/registries.conf.d && cat > /etc/containers/registries.conf.d/ferry.conf <<'EOF'
                [[registry]]
                location = "\(address)"
                insecure = false
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
