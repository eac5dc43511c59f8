import ArgumentParser
import OCICore

/// `ferry-appliance`: the isolated side. Imports bundles and serves them as a registry.
/// Only `--version` exists so far; import and serve follow.
public struct ApplianceCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "ferry-appliance",
        abstract: "Import Ferry bundles and serve them over TLS as an OCI registry (not yet implemented).",
        version: FerryVersion.string
    )

    public init() {}

    public func run() async throws {
        print("ferry-appliance \(FerryVersion.string): import and serve are not implemented yet; see --help")
    }
}
