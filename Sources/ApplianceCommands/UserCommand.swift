import ArgumentParser
import Foundation
import OCIRegistryServer

/// `ferry-appliance user add|del|list`.
struct UserCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "user",
        abstract: "Manage the appliance's users (DATA/users.json; a running serve picks changes up at once).",
        discussion: """
            Roles, each including the one before: pull; push (pull and push); delete (pull, push and \
            delete); admin (everything on every repository, and the catalog). --repo limits a user to \
            repositories under the given prefixes (apps covers apps and apps/...).

            Examples:
              printf '%s' "$PASSWORD" | ferry-appliance user add ci --password-stdin --role push --repo apps
              ferry-appliance user add ops --password-stdin --role delete < ops.pass
              ferry-appliance user list
            """,
        subcommands: [Add.self, Delete.self, List.self])

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "add", abstract: "Add a user, or replace its password and role.")

        @Argument(help: "User name: letters, digits, '.', '_', '-', '@'.")
        var name: String

        @Flag(name: .customLong("password-stdin"), help: "Read the password from standard input (required).")
        var passwordFromStandardInput = false

        @Option(help: "pull, push, delete or admin.")
        var role: String

        @Option(name: .customLong("repo"), help: "A repository prefix the user is limited to (repeatable).")
        var repositories: [String] = []

        @OptionGroup var store: StoreOptions

        func run() async throws {
            try await reportingApplianceErrors {
                guard passwordFromStandardInput else {
                    throw ValidationError("give the password on standard input with --password-stdin")
                }
                guard let role = Role(rawValue: role) else {
                    throw ValidationError("--role \(role): expected pull, push, delete or admin")
                }
                var password = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
                while password.hasSuffix("\n") || password.hasSuffix("\r") { password.removeLast() }
                try UserDatabase(dataDirectory: store.resolved).add(
                    name: name, password: password,
                    grant: Grant(role: role, repositories: repositories.isEmpty ? nil : repositories))
                print(
                    "user \(name): \(role.rawValue)"
                        + (repositories.isEmpty ? "" : " on \(repositories.joined(separator: ", "))"))
            }
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "del", abstract: "Remove a user.", aliases: ["remove", "rm"])

        @Argument var name: String
        @OptionGroup var store: StoreOptions

        func run() async throws {
            try await reportingApplianceErrors {
                guard try UserDatabase(dataDirectory: store.resolved).remove(name: name) else {
                    throw ValidationError("no user \(name)")
                }
                print("user \(name) removed")
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "list", abstract: "List users and their roles.", aliases: ["ls"])

        @OptionGroup var store: StoreOptions
        @Flag(help: "Print JSON (without password hashes).") var json = false

        func run() async throws {
            try await reportingApplianceErrors {
                let users = try UserDatabase(dataDirectory: store.resolved).load().values.sorted { $0.name < $1.name }
                if json {
                    let entries = users.map {
                        ["name": $0.name, "role": $0.grant.role.rawValue, "repositories": $0.grant.repositories ?? []]
                            as [String: Any]
                    }
                    let data = try JSONSerialization.data(
                        withJSONObject: entries, options: [.prettyPrinted, .sortedKeys])
                    FileHandle.standardOutput.write(data + Data("\n".utf8))
                    return
                }
                for user in users {
                    print(
                        "\(user.name)\t\(user.grant.role.rawValue)\t\(user.grant.repositories?.joined(separator: ",") ?? "*")"
                    )
                }
            }
        }
    }
}
