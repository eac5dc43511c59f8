import Foundation

/// A CA and a server certificate for 127.0.0.1/localhost, made with openssl at test time.
struct TestCA {
    let directory: String
    var caCertificate: String { "\(directory)/ca.crt" }
    var serverCertificate: String { "\(directory)/server.crt" }
    var serverKey: String { "\(directory)/server.key" }

    init(directory: String) throws {
        self.directory = directory
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let ext = "\(directory)/san.ext"
        try
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
            .write(toFile: ext, atomically: true, encoding: .utf8)
        try Shell.run([
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "\(directory)/ca.key", "-out", caCertificate, "-days", "2", "-subj", "/CN=Ferry Test CA",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        ])
        try Shell.run([
            "openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", serverKey,
            "-out", "\(directory)/server.csr", "-subj", "/CN=127.0.0.1",
        ])
        try Shell.run([
            "openssl", "x509", "-req", "-in", "\(directory)/server.csr", "-CA", caCertificate, "-CAkey",
            "\(directory)/ca.key", "-CAcreateserial", "-out", serverCertificate, "-days", "2", "-extfile", ext,
        ])
    }
}
