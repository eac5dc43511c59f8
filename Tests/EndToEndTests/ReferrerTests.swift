import Foundation
import OCICore
import Testing

/// Signatures and SBOMs travel with their images (issue 13, point 1): cosign's tags and the OCI
/// referrers tag schema, found in the source registry, carried by default, served by the appliance
/// under the same tags with the same digests, and left out with `--no-referrers`.
@Suite(.serialized)
struct ReferrerTests {
    @Test func cosignTagsAndTheReferrersIndexTravelWithTheirImage() throws {
        let registry = try RegistryFixture(tls: true)
        defer { registry.stop() }
        let work = try Shell.temporaryDirectory()
        defer { Shell.remove(work) }
        let seeded = try SeededRegistry.make(registry, largeLayer: 1 << 20)
        let image = try #require(seeded.images["test/single:1.0"])
        let stem = "sha256-\(image.encoded)"
        // A signature in cosign's shape (a simple-signing payload layer with its signature
        // annotation), an SBOM attestation, and an OCI referrers-schema index pointing at a third
        // artifact whose subject is the image.
        let builder = try ImageBuilder(directory: "\(work)/artifacts")
        let amd64 = Platform(os: "linux", architecture: "amd64")
        func artifact(_ payload: String, _ mediaType: String, annotations: [String: String]) throws -> Descriptor {
            var layer = try builder.addBlob(Array(payload.utf8), mediaType: mediaType)
            layer.annotations = annotations
            return try builder.addImage(platform: amd64, layers: [layer])
        }
        let signature = try artifact(
            #"{"critical":{"image":{"docker-manifest-digest":"\#(image)"},"type":"cosign container image signature"}}"#,
            "application/vnd.dev.cosign.simplesigning.v1+json",
            annotations: ["dev.cosignproject.cosign/signature": "MEUCIQ=="])
        let attestation = try artifact(
            #"{"payloadType":"application/vnd.in-toto+json","payload":"e30="}"#,
            "application/vnd.dsse.envelope.v1+json",
            annotations: ["predicateType": "https://spdx.dev/Document"])
        let sbom = try artifact(#"{"spdxVersion":"SPDX-2.3"}"#, "application/spdx+json", annotations: [:])
        // (skopeo, which pushes it, keeps an index's children as they are only with a platform.)
        let listed = sbom
        try builder.tag(signature, as: "sig")
        try builder.tag(attestation, as: "att")
        try builder.tag(try builder.addIndex([listed]), as: "referrers")
        try builder.push("sig", to: registry, as: "test/single:\(stem).sig")
        try builder.push("att", to: registry, as: "test/single:\(stem).att")
        try builder.push("referrers", to: registry, as: "test/single:\(stem)")
        let upstream = try ["\(stem).sig", "\(stem).att", stem].map {
            ($0, try SeededRegistry.registryDigest(registry, "test/single:\($0)"))
        }

        let source = "\(registry.host)/test/single:1.0"
        let exported = try Ferry.run(
            ["export", "-o", "\(work)/b.tar", "--cache", "\(work)/cache", "--json", source] + registry.ferryTrustFlags)
        let summary = try JSONSerialization.jsonObject(with: Data(exported.stdout.utf8)) as? [String: Any]
        let carried = (summary?["images"] as? [[String: Any]] ?? []).compactMap { $0["reference"] as? String }
        #expect(carried.count == 4, "\(carried)")
        for (tag, _) in upstream { #expect(carried.contains("\(registry.host)/test/single:\(tag)"), "\(carried)") }
        let inspected = try Ferry.run(["inspect", "\(work)/b.tar"]).stdout
        #expect(inspected.contains("carries    attestation, referrers, signature"), "\(inspected)")
        let onlySignatures = try Ferry.run(
            [
                "export", "-o", "\(work)/sig.tar", "--cache", "\(work)/cache", "--json", "--referrers-type",
                "signature",
                source,
            ] + registry.ferryTrustFlags)
        #expect(onlySignatures.stdout.contains("\(stem).sig") && !onlySignatures.stdout.contains("\(stem).att"))
        let without = try Ferry.run(
            ["export", "-o", "\(work)/plain.tar", "--cache", "\(work)/cache", "--json", "--no-referrers", source]
                + registry.ferryTrustFlags)
        #expect(!without.stdout.contains(stem), "\(without.stdout)")

        // The appliance serves them under the same tags, with upstream's digests.
        let appliance = try ApplianceFixture(dataDirectory: "\(work)/site")
        defer { appliance.stop() }
        try appliance.command(["import", "\(work)/b.tar"])
        let certs = try appliance.certDirectory()
        let served = Reference.servedHost(registry.host)
        let images = try appliance.command(["images"]).stdout
        #expect(images.contains("test/single:1.0  \(image)  [attestation, referrers, signature]"), "\(images)")
        for (tag, digest) in upstream {
            let raw = try Shell.run([
                "skopeo", "inspect", "--raw", "--cert-dir", certs,
                "docker://\(appliance.host)/\(served)/test/single:\(tag)",
            ]).stdout
            #expect(Digest.of(Array(raw.utf8)) == digest, "\(tag)")
        }
    }

    /// A registry with the OCI 1.1 referrers API (the appliance itself): an SBOM pushed with the
    /// image as its `subject` is found through the API, carried by digest, and listed by the next
    /// appliance's referrers API.
    @Test func referrersFromTheReferrersAPITravelByDigest() throws {
        let registry = try RegistryFixture(tls: true)
        defer { registry.stop() }
        let work = try Shell.temporaryDirectory()
        defer { Shell.remove(work) }
        let seeded = try SeededRegistry.make(registry, largeLayer: 1 << 20)
        let image = try #require(seeded.images["test/single:1.0"])
        try Ferry.run(
            [
                "export", "-o", "\(work)/base.tar", "--cache", "\(work)/cache", "--no-referrers",
                "\(registry.host)/test/single:1.0",
            ] + registry.ferryTrustFlags)
        let source = try ApplianceFixture(dataDirectory: "\(work)/source")
        defer { source.stop() }
        try source.command(["import", "\(work)/base.tar"])
        try source.addUser("ci", password: "ci-password", role: "push")
        let repository = "\(Reference.servedHost(registry.host))/test/single"
        let raw = try Shell.run([
            "skopeo", "inspect", "--raw", "--cert-dir", try source.certDirectory(),
            "docker://\(source.host)/\(repository):1.0",
        ]).stdout

        // An SBOM artifact whose subject is the image, pushed by digest (no tag).
        let empty = Array("{}".utf8)
        let document = Array(#"{"spdxVersion":"SPDX-2.3","name":"single"}"#.utf8)
        func upload(_ blob: [UInt8]) throws {
            try Data(blob).write(to: URL(fileURLWithPath: "\(work)/blob"))
            let upload = try source.curl(
                "/v2/\(repository)/blobs/uploads/?digest=\(Digest.of(blob))", method: "POST",
                headers: ["Content-Type: application/octet-stream"], user: "ci:ci-password", bodyFile: "\(work)/blob")
            #expect(upload.status == 201)
        }
        try upload(empty)
        try upload(document)
        let manifest =
            #"{"schemaVersion":2,"mediaType":"\#(MediaType.ociManifest)","artifactType":"application/spdx+json","#
            + #""config":{"mediaType":"\#(MediaType.ociEmpty)","digest":"\#(Digest.of(empty))","size":2},"#
            + #""layers":[{"mediaType":"application/spdx+json","digest":"\#(Digest.of(document))","size":\#(document.count)}],"#
            + #""subject":{"mediaType":"\#(MediaType.ociManifest)","digest":"\#(image)","size":\#(raw.utf8.count)}}"#
        try manifest.write(toFile: "\(work)/sbom.json", atomically: true, encoding: .utf8)
        let sbom = Digest.of(Array(manifest.utf8))
        let put = try source.curl(
            "/v2/\(repository)/manifests/\(sbom)", method: "PUT", headers: ["Content-Type: \(MediaType.ociManifest)"],
            user: "ci:ci-password", bodyFile: "\(work)/sbom.json")
        #expect(put.status == 201, "\(put.text)")
        #expect(try source.curl("/v2/\(repository)/referrers/\(image)").text.contains(sbom.description))

        // A cosign signature in the referrers form (cosign's OCI 1.1 mode): an artifact whose
        // subject is the image, with the simple-signing payload and its signature annotation.
        let signature = try #require(try Self.cosignSign([image], in: work).first)
        let payload = Array(try Data(contentsOf: URL(fileURLWithPath: "\(work)/payload0")))
        try upload(payload)
        let signatureManifest =
            #"{"schemaVersion":2,"mediaType":"\#(MediaType.ociManifest)","artifactType":"application/vnd.dev.cosign.artifact.sig.v1+json","#
            + #""config":{"mediaType":"\#(MediaType.ociEmpty)","digest":"\#(Digest.of(empty))","size":2},"#
            + #""layers":[{"mediaType":"application/vnd.dev.cosign.simplesigning.v1+json","digest":"\#(Digest.of(payload))","size":\#(payload.count),"#
            + #""annotations":{"dev.cosignproject.cosign/signature":"\#(signature)"}}],"#
            + #""subject":{"mediaType":"\#(MediaType.ociManifest)","digest":"\#(image)","size":\#(raw.utf8.count)}}"#
        try signatureManifest.write(toFile: "\(work)/signature.json", atomically: true, encoding: .utf8)
        let signaturePut = try source.curl(
            "/v2/\(repository)/manifests/\(Digest.of(Array(signatureManifest.utf8)))", method: "PUT",
            headers: ["Content-Type: \(MediaType.ociManifest)"], user: "ci:ci-password",
            bodyFile: "\(work)/signature.json")
        #expect(signaturePut.status == 201, "\(signaturePut.text)")
        for (key, status) in [("good", Int32(0)), ("wrong", 65)] {
            let checked = try Ferry.run(
                [
                    "export", "-o", "\(work)/signed-\(key).tar", "--cache", "\(work)/cache", "--ca-file",
                    source.caCertificate, "--verify-signatures", "\(work)/\(key).pub",
                    "\(source.host)/\(repository):1.0",
                ], check: false)
            #expect(checked.status == status, "\(key): \(checked.stderr)")
        }
        try Ferry.run(["verify", "\(work)/signed-good.tar", "--image-keys", "\(work)/good.pub"])

        // Exported from that appliance, the SBOM travels by digest and is listed again downstream.
        let exported = try Ferry.run(
            [
                "export", "-o", "\(work)/b.tar", "--cache", "\(work)/cache", "--json", "--ca-file",
                source.caCertificate,
                "\(source.host)/\(repository):1.0",
            ])
        #expect(exported.stdout.contains("\(source.host)/\(repository)@\(sbom)"), "\(exported.stdout)")
        let filtered = try Ferry.run(
            [
                "export", "-o", "\(work)/f.tar", "--cache", "\(work)/cache", "--json", "--ca-file",
                source.caCertificate,
                "--referrers-type", "application/vnd.example+json", "\(source.host)/\(repository):1.0",
            ])
        #expect(!filtered.stdout.contains(sbom.description), "\(filtered.stdout)")
        let kept = try Ferry.run(
            [
                "export", "-o", "\(work)/k.tar", "--cache", "\(work)/cache", "--json", "--ca-file",
                source.caCertificate,
                "--referrers-type", "application/spdx+json", "\(source.host)/\(repository):1.0",
            ])
        #expect(kept.stdout.contains(sbom.description), "\(kept.stdout)")
        let target = try ApplianceFixture(dataDirectory: "\(work)/target")
        defer { target.stop() }
        try target.command(["import", "\(work)/b.tar"])
        let downstream = "\(Reference.servedHost(source.host))/\(repository)"
        let images = try target.command(["images"]).stdout
        #expect(images.contains("\(downstream):1.0  \(image)  [referrers]"), "\(images)")
        let listed = try target.curl("/v2/\(downstream)/referrers/\(image)").text
        #expect(listed.contains(sbom.description) && listed.contains("application/spdx+json"), "\(listed)")
    }

    /// Any OCI artifact travels like an image (issue 13, point 2): a Helm chart as Helm pushes it
    /// (its own config and layer media types), named in the list like an image, exported, verified,
    /// imported, served and pushed with its digest unchanged.
    @Test func aHelmChartArtifactTravelsLikeAnImage() throws {
        let registry = try RegistryFixture(tls: true)
        defer { registry.stop() }
        let work = try Shell.temporaryDirectory()
        defer { Shell.remove(work) }
        let ca = try #require(registry.tls?.caCertificate)
        let config = Array(#"{"name":"demo","version":"0.1.0","apiVersion":"v2"}"#.utf8)
        let chart = (0..<4096).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        // The distribution registry's two-step upload: POST for a location, PUT the bytes there.
        for blob in [config, chart] {
            try Data(blob).write(to: URL(fileURLWithPath: "\(work)/blob"))
            let started = try HTTPReply.fetch(
                "https://\(registry.host)/v2/charts/demo/blobs/uploads/", method: "POST", ca: ca)
            let location = try #require(started.headers["location"])
            let url = location.hasPrefix("http") ? location : "https://\(registry.host)\(location)"
            let upload = try HTTPReply.fetch(
                "\(url)\(url.contains("?") ? "&" : "?")digest=\(Digest.of(blob))", method: "PUT",
                headers: ["Content-Type: application/octet-stream"], ca: ca, bodyFile: "\(work)/blob")
            #expect(upload.status == 201, "\(upload.text)")
        }
        let manifest =
            #"{"schemaVersion":2,"mediaType":"\#(MediaType.ociManifest)","#
            + #""config":{"mediaType":"application/vnd.cncf.helm.config.v1+json","digest":"\#(Digest.of(config))","size":\#(config.count)},"#
            + #""layers":[{"mediaType":"application/vnd.cncf.helm.chart.content.v1.tar+gzip","digest":"\#(Digest.of(chart))","size":\#(chart.count)}]}"#
        try manifest.write(toFile: "\(work)/chart.json", atomically: true, encoding: .utf8)
        let put = try HTTPReply.fetch(
            "https://\(registry.host)/v2/charts/demo/manifests/0.1.0", method: "PUT",
            headers: ["Content-Type: \(MediaType.ociManifest)"], ca: ca, bodyFile: "\(work)/chart.json")
        #expect(put.status == 201, "\(put.text)")
        let digest = Digest.of(Array(manifest.utf8))

        try "\(registry.host)/charts/demo:0.1.0\n".write(toFile: "\(work)/list.txt", atomically: true, encoding: .utf8)
        try Ferry.run(
            ["export", "-f", "\(work)/list.txt", "-o", "\(work)/b.tar", "--cache", "\(work)/cache"]
                + registry.ferryTrustFlags)
        try Ferry.run(["verify", "\(work)/b.tar"])
        let appliance = try ApplianceFixture(dataDirectory: "\(work)/site")
        defer { appliance.stop() }
        try appliance.command(["import", "\(work)/b.tar"])
        let served = try appliance.curl(
            "/v2/\(Reference.servedHost(registry.host))/charts/demo/manifests/0.1.0",
            headers: ["Accept: \(MediaType.ociManifest)"])
        #expect(served.status == 200 && served.headers["docker-content-digest"] == digest.description)
        let target = try RegistryFixture(tls: true)
        defer { target.stop() }
        try Ferry.run(["push", "\(work)/b.tar", "--to", target.host, "--drop-registry-host"] + target.ferryTrustFlags)
        #expect(try SeededRegistry.registryDigest(target, "charts/demo:0.1.0") == digest)
    }

    /// Makes `good.pub` and `wrong.pub` in `work`, and for each digest a cosign simple-signing
    /// payload (`payloadN`) naming it, signed with the good key (ECDSA P-256, with python's
    /// `cryptography`); returns the base64 signatures.
    static func cosignSign(_ digests: [Digest], in work: String) throws -> [String] {
        try Shell.run(
            [
                "/usr/bin/python3", "-c",
                """
                import base64, json, os, sys
                from cryptography.hazmat.primitives import hashes, serialization
                from cryptography.hazmat.primitives.asymmetric import ec
                work = sys.argv[1]
                keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(2)]
                for name, key in zip(["good", "wrong"], keys):
                    open(f"{work}/{name}.pub", "wb").write(key.public_key().public_bytes(
                        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
                for i, digest in enumerate(sys.argv[2:]):
                    payload = json.dumps({"critical": {"identity": {"docker-reference": "x"},
                        "image": {"docker-manifest-digest": digest}, "type": "cosign container image signature"},
                        "optional": None}).encode()
                    open(f"{work}/payload{i}", "wb").write(payload)
                    print(base64.b64encode(keys[0].sign(payload, ec.ECDSA(hashes.SHA256()))).decode())
                """, work,
            ] + digests.map(\.description)
        ).stdout.split(separator: "\n").map(String.init)
    }

    /// Cosign signatures checked offline at export (issue 13, point 4): ECDSA P-256 signatures over
    /// simple-signing payloads, made with python's `cryptography` in cosign's format.
    @Test func exportVerifiesCosignSignaturesOffline() throws {
        let registry = try RegistryFixture(tls: true)
        defer { registry.stop() }
        let work = try Shell.temporaryDirectory()
        defer { Shell.remove(work) }
        let seeded = try SeededRegistry.make(registry, largeLayer: 1 << 20)
        let single = try #require(seeded.images["test/single:1.0"])
        let docker = try #require(seeded.images["test/nested/docker:v2"])
        let multi = try #require(seeded.images["test/multi:1.0"])
        // Keys, and payloads signed with the first: test/single's names its digest; the one for
        // test/nested/docker names another image's (a signature over another digest).
        // test/large's payload is altered after signing (a tampered payload).
        let large = try #require(seeded.images["test/large:latest"])
        let signed = try Self.cosignSign([single, multi, large], in: work)
        #expect(signed.count == 3)
        let builder = try ImageBuilder(directory: "\(work)/signatures")
        let signedImages = [("test/single", single), ("test/nested/docker", docker), ("test/large", large)]
        for (i, (repository, subject)) in signedImages.enumerated() {
            var payload = Array(try Data(contentsOf: URL(fileURLWithPath: "\(work)/payload\(i)")))
            if repository == "test/large" {
                payload = Array(
                    String(decoding: payload, as: UTF8.self).replacingOccurrences(of: "\"x\"", with: "\"y\"").utf8)
            }
            var layer = try builder.addBlob(payload, mediaType: "application/vnd.dev.cosign.simplesigning.v1+json")
            layer.annotations = ["dev.cosignproject.cosign/signature": signed[i]]
            try builder.tag(
                try builder.addImage(platform: Platform(os: "linux", architecture: "amd64"), layers: [layer]),
                as: "s\(i)")
            try builder.push("s\(i)", to: registry, as: "\(repository):sha256-\(subject.encoded).sig")
        }
        func export(_ name: String, key: String) throws -> Shell.Result {
            try Ferry.run(
                [
                    "export", "-o",
                    "\(work)/\(key.hasSuffix("good.pub") ? name.split(separator: "/")[1] : "refused").tar",
                    "--cache", "\(work)/cache", "--verify-signatures", key,
                    "\(registry.host)/\(name)",
                ] + registry.ferryTrustFlags, check: false)
        }
        #expect(try export("test/single:1.0", key: "\(work)/good.pub").status == 0)
        let wrong = try export("test/single:1.0", key: "\(work)/wrong.pub")
        #expect(wrong.status == 65 && wrong.stderr.contains("does not verify"), "\(wrong.stderr)")
        let other = try export("test/nested/docker:v2", key: "\(work)/good.pub")
        #expect(other.status == 65 && other.stderr.contains("test/nested/docker:v2"), "\(other.stderr)")
        let tampered = try export("test/large:latest", key: "\(work)/good.pub")
        #expect(
            tampered.status == 65 && tampered.stderr.contains("test/large:latest: its signature does not verify"),
            "\(tampered.stderr)")
        let unsigned = try export("test/multi:1.0", key: "\(work)/good.pub")
        #expect(unsigned.status == 65 && unsigned.stderr.contains("not signed"), "\(unsigned.stderr)")
        // A runnable image under a tag that merely looks like a signature's is checked like any other.
        try SeededRegistry.retag(
            registry, "test/single:1.0", as: "test/disguised:sha256-\(String(repeating: "0", count: 64)).sig")
        let disguised = try export(
            "test/disguised:sha256-\(String(repeating: "0", count: 64)).sig", key: "\(work)/good.pub")
        #expect(disguised.status == 65 && disguised.stderr.contains("not signed"), "\(disguised.stderr)")
        try "not a key".write(toFile: "\(work)/bad.pub", atomically: true, encoding: .utf8)
        let badKey = try export("test/single:1.0", key: "\(work)/bad.pub")
        #expect(badKey.status == 64 && badKey.stderr.contains("bad.pub"), "\(badKey.stderr)")
        // The same check on a bundle anywhere, and at the appliance under requireImageSignatures.
        try Ferry.run(
            [
                "export", "-o", "\(work)/mixed.tar", "--cache", "\(work)/cache", "\(registry.host)/test/single:1.0",
                "\(registry.host)/test/multi:1.0",
            ] + registry.ferryTrustFlags)
        try Ferry.run(["verify", "\(work)/single:1.0.tar", "--image-keys", "\(work)/good.pub"])
        let mixed = try Ferry.run(["verify", "\(work)/mixed.tar", "--image-keys", "\(work)/good.pub"], check: false)
        #expect(mixed.status == 65 && mixed.stderr.contains("test/multi:1.0: not signed"), "\(mixed.stderr)")
        let site = "\(work)/site"
        try FileManager.default.createDirectory(atPath: site, withIntermediateDirectories: true)
        try "import:\n  requireImageSignatures: [\(work)/good.pub]\n".write(
            toFile: "\(work)/ferry.yaml", atomically: true, encoding: .utf8)
        let config = ["--config", "\(work)/ferry.yaml", "--data-dir", site]
        let refusedImport = try Shell.run(
            [ImportTests.appliance, "import", "\(work)/mixed.tar"] + config, check: false)
        #expect(refusedImport.status == 65 && refusedImport.stderr.contains("not signed"), "\(refusedImport.stderr)")
        #expect(!(try Shell.run([ImportTests.appliance, "images"] + config).stdout.contains("test/")))
        // Signed, but by a key the site does not trust: refused too.
        try "import:\n  requireImageSignatures: [\(work)/wrong.pub]\n".write(
            toFile: "\(work)/wrong.yaml", atomically: true, encoding: .utf8)
        let wrongKeyImport = try Shell.run(
            [
                ImportTests.appliance, "import", "\(work)/single:1.0.tar", "--config", "\(work)/wrong.yaml",
                "--data-dir", site,
            ],
            check: false)
        #expect(
            wrongKeyImport.status == 65 && wrongKeyImport.stderr.contains("does not verify"), "\(wrongKeyImport.stderr)"
        )
        #expect(!(try Shell.run([ImportTests.appliance, "images"] + config).stdout.contains("test/")))
        try Shell.run([ImportTests.appliance, "import", "\(work)/single:1.0.tar"] + config)
        #expect(try Shell.run([ImportTests.appliance, "images"] + config).stdout.contains("test/single:1.0"))

        // Nothing was written for a refused export.
        #expect(!FileManager.default.fileExists(atPath: "\(work)/refused.tar"))
        #expect(!FileManager.default.fileExists(atPath: "\(work)/nested.tar"))
        #expect(!FileManager.default.fileExists(atPath: "\(work)/multi:1.0.tar"))
    }
}
