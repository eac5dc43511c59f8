import OCICore

/// What docker, containerd, podman, k3s/rke2 and the system trust store need to pull from the
/// appliance, as text to paste: `ferry-appliance client-config` prints it, the console shows it.
public enum ClientConfiguration {
    /// The clients there is a snippet for.
    public static let clients = ["docker", "containerd", "podman", "k3s", "rke2", "system"]

    /// The source registries of the store's repositories (first components), `_` turned back into `:`.
    public static func upstreams(in repositories: [String]) -> [String] {
        Set(repositories.compactMap { Reference.sourceRegistry(ofServed: $0) }).sorted()
    }

    public static func upstream(served: String) -> String { Reference.registry(servedHost: served) }
    public static func served(_ upstream: String) -> String { Reference.servedHost(upstream) }

    public static func snippet(for client: String, address: String, caPEM: String, upstreams: [String] = []) -> String {
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
