/// The version both Ferry executables report and bundles record.
public enum FerryVersion {
    public static let string = "0.1.0"
}
