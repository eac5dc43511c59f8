import ArgumentParser
import Foundation
import HelmCharts
import OCIBundle
import OCICore
import OCIRegistryClient

/// `ferry`: the connected side. Exports images from registries into a bundle.
public struct FerryCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "ferry",
        abstract: "Carry container images across an air gap.",
        discussion: """
            On the connected side, `ferry export` pulls images from any registry into one bundle: a \
            standard OCI image-layout tar with a bundle manifest, optionally signed (`ferry keygen`, \
            `--sign-key`). Carry the bundle across; anywhere, `ferry verify` proves it complete and \
            intact (and signed by a key you trust) and `ferry inspect` shows what it holds. Load it \
            with `ctr images import` or `skopeo copy oci-archive:BUNDLE:REFERENCE ...`, or push it into \
            any registry (an existing Harbor, a distribution registry, a Ferry appliance) with `ferry push`.

            Exit codes: 0 success; 1 failure (registry, network, filesystem); 64 bad usage or input \
            (arguments, image list); 65 content failed verification (digest or size mismatch).
            """,
        version: FerryVersion.string,
        subcommands: [
            ExportCommand.self, PlanCommand.self, DiffCommand.self, VerifyCommand.self, InspectCommand.self,
            PushCommand.self, SyncCommand.self, SplitCommand.self, ConvertCommand.self,
            KeygenCommand.self,
            SignCommand.self,
        ]
    )

    public init() {}
}

/// Exit codes, documented in the README.
public enum FerryExitCode {
    public static let failure: Int32 = 1
    public static let usage: Int32 = 64
    public static let verification: Int32 = 65
}

/// Prints `ferry: error: …` (each line of a multi-line error prefixed) and exits with the code
/// that fits the error.
func reportingErrors(_ body: () async throws -> Void) async throws {
    do {
        try await body()
    } catch let error as ExitCode {
        throw error
    } catch let error as CleanExit {
        throw error
    } catch {
        let text = String(describing: error)
        for line in text.split(separator: "\n") {
            FileHandle.standardError.write(Data("ferry: error: \(line)\n".utf8))
        }
        throw ExitCode(exitCode(for: error))
    }
}

func exitCode(for error: any Error) -> Int32 {
    switch error {
    case is ImageListError, is ReferenceError, is PlatformError, is ValidationError, is InventoryError,
        is CredentialError, is TrustError,
        is SigningError, is VolumePlanError:
        FerryExitCode.usage
    case let error as ExportError where error.isVerificationFailure: FerryExitCode.verification
    case let error as RegistryError where error.isVerificationFailure: FerryExitCode.verification
    case is BundleVerificationFailed: FerryExitCode.verification
    case let error as LayoutArchiveError: error.isUsage ? FerryExitCode.usage : FerryExitCode.verification
    case let error as SiteRecordError:
        if case .signature = error { FerryExitCode.verification } else { FerryExitCode.usage }
    case let error as PushError where error.isVerification: FerryExitCode.verification
    case let error as SyncError:
        error.isVerification ? FerryExitCode.verification : error.isUsage ? FerryExitCode.usage : FerryExitCode.failure
    case let error as ChartError:
        switch error {
        case .invalidRequest: FerryExitCode.usage
        case .invalidIndex, .invalidArchive, .digestMismatch: FerryExitCode.verification
        case .notInIndex: FerryExitCode.failure
        }
    case let error as BundleError:
        switch error {
        case .invalid, .corruptSource, .changedWhileSigning, .placedBlobCorrupt: FerryExitCode.verification
        case .io, .busy: FerryExitCode.failure
        }
    default: FerryExitCode.failure
    }
}
