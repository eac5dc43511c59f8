import Foundation

/// An error as the Distribution API reports it: an HTTP status and an OCI error code, with a
/// message for people (`../shared/specs/oci-distribution/spec.md`, "Error Codes").
public struct DistributionError: Error, Equatable, Sendable, CustomStringConvertible {
    public enum Code: String, Sendable {
        case blobUnknown = "BLOB_UNKNOWN"
        case blobUploadInvalid = "BLOB_UPLOAD_INVALID"
        case blobUploadUnknown = "BLOB_UPLOAD_UNKNOWN"
        case digestInvalid = "DIGEST_INVALID"
        case manifestBlobUnknown = "MANIFEST_BLOB_UNKNOWN"
        case manifestInvalid = "MANIFEST_INVALID"
        case manifestUnknown = "MANIFEST_UNKNOWN"
        case nameInvalid = "NAME_INVALID"
        case nameUnknown = "NAME_UNKNOWN"
        case sizeInvalid = "SIZE_INVALID"
        case unauthorized = "UNAUTHORIZED"
        case denied = "DENIED"
        case unsupported = "UNSUPPORTED"
        case tooManyRequests = "TOOMANYREQUESTS"
        /// Not in the spec's table; the distribution registry uses it for a server-side failure.
        case unknown = "UNKNOWN"
        /// Not in the spec's table; the distribution registry (v3) uses it for a bad `n`.
        case paginationNumberInvalid = "PAGINATION_NUMBER_INVALID"
    }

    public let status: Int
    public let code: Code
    public let message: String
    public let detail: String?

    public init(status: Int, code: Code, message: String, detail: String? = nil) {
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail
    }

    public var description: String { "\(code.rawValue): \(message)" + (detail.map { " (\($0))" } ?? "") }

    /// `{"errors":[{"code":…,"message":…,"detail":…}]}`
    public var body: [UInt8] {
        struct Entry: Encodable {
            var code: String
            var message: String
            var detail: String?
        }
        struct Envelope: Encodable { var errors: [Entry] }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let envelope = Envelope(errors: [Entry(code: code.rawValue, message: message, detail: detail)])
        return Array((try? encoder.encode(envelope)) ?? Data(#"{"errors":[]}"#.utf8))
    }

    public static func nameUnknown(_ name: String) -> Self {
        Self(status: 404, code: .nameUnknown, message: "repository name not known to registry", detail: name)
    }
    public static func nameInvalid(_ name: String) -> Self {
        Self(status: 400, code: .nameInvalid, message: "invalid repository name", detail: name)
    }
    public static func manifestUnknown(_ reference: String) -> Self {
        Self(status: 404, code: .manifestUnknown, message: "manifest unknown", detail: reference)
    }
    public static func blobUnknown(_ digest: String) -> Self {
        Self(status: 404, code: .blobUnknown, message: "blob unknown to registry", detail: digest)
    }
    public static func digestInvalid(_ digest: String) -> Self {
        Self(status: 400, code: .digestInvalid, message: "invalid digest", detail: digest)
    }
    public static func unsupported(_ what: String) -> Self {
        Self(status: 405, code: .unsupported, message: "the operation is unsupported", detail: what)
    }
    public static func paginationNumberInvalid(_ value: String) -> Self {
        Self(status: 400, code: .paginationNumberInvalid, message: "invalid number of results requested", detail: value)
    }
}
