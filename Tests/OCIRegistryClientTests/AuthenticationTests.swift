import Foundation
import Testing

@testable import OCIRegistryClient

struct AuthenticationChallengeTests {
    @Test func parsesDockerHubBearerChallenge() {
        let challenges = AuthenticationChallenge.parse(
            #"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull""#
        )
        #expect(challenges.count == 1)
        #expect(challenges[0].isBearer)
        #expect(challenges[0].realm == "https://auth.docker.io/token")
        #expect(challenges[0].service == "registry.docker.io")
        #expect(challenges[0].scope == "repository:library/nginx:pull")
    }

    @Test func parsesSeveralChallengesQuotedCommasAndEscapes() {
        let challenges = AuthenticationChallenge.parse(
            #"Basic realm="Registry Realm", Bearer realm="https://x/token?a=1,2",scope="a:b:pull,push", error="say \"hi\"""#
        )
        #expect(challenges.map(\.scheme) == ["Basic", "Bearer"])
        #expect(challenges[0].realm == "Registry Realm")
        #expect(challenges[1].realm == "https://x/token?a=1,2")
        #expect(challenges[1].scope == "a:b:pull,push")
        #expect(challenges[1].parameters["error"] == #"say "hi""#)
    }

    @Test(arguments: ["", "   ", ",,,", "Bearer", "Bearer realm=", "realm=\"unterminated"])
    func survivesOddHeaders(_ header: String) {
        _ = AuthenticationChallenge.parse(header)
    }
}

struct CredentialStoreTests {
    let encoded = Data("alice:pa:ss".utf8).base64EncodedString()

    @Test func normalisesKeys() {
        #expect(CredentialStore.normalizeKey("https://index.docker.io/v1/") == "docker.io")
        #expect(CredentialStore.normalizeKey("registry-1.docker.io") == "docker.io")
        #expect(CredentialStore.normalizeKey("http://host:5000") == "host:5000")
        #expect(CredentialStore.normalizeKey("quay.io/team/app") == "quay.io/team/app")
    }

    @Test func readsDockerConfigAndAuthJSONForms() throws {
        let json = """
            {"auths": {
              "https://index.docker.io/v1/": {"auth": "\(encoded)"},
              "quay.io/team": {"username": "bob", "password": "pw"},
              "ghcr.io": {"auth": "", "identitytoken": "refresh-me"}
            }, "credsStore": "desktop"}
            """
        var store = CredentialStore()
        store.entries = try CredentialStore.parseAuthFile(data: Data(json.utf8), source: "config.json")
        #expect(
            store.credential(registry: "docker.io", repository: "library/nginx")
                == .basic(username: "alice", password: "pa:ss"))
        #expect(
            store.credential(registry: "quay.io", repository: "team/app") == .basic(username: "bob", password: "pw"))
        #expect(store.credential(registry: "quay.io", repository: "other/app") == nil)
        #expect(store.credential(registry: "ghcr.io", repository: "x/y") == .identityToken("refresh-me"))
        #expect(store.credential(registry: "example.com", repository: "x") == nil)
    }

    @Test func refusesMalformedFiles() {
        #expect(throws: CredentialError.self) {
            try CredentialStore.parseAuthFile(data: Data("{".utf8), source: "bad.json")
        }
        #expect(throws: CredentialError.self) {
            try CredentialStore.parseAuthFile(data: Data(#"{"auths":{"x":{"auth":"!!!"}}}"#.utf8), source: "bad.json")
        }
    }

    @Test func explicitCredentialsWin() throws {
        var store = CredentialStore()
        store.entries = try CredentialStore.parseAuthFile(
            data: Data(#"{"auths":{"host:5000":{"auth":"\#(encoded)"}}}"#.utf8), source: "f")
        try store.addExplicit("host:5000=carol:c=d")
        try store.addExplicit("dave:e=f")
        #expect(store.credential(registry: "host:5000", repository: "a") == .basic(username: "carol", password: "c=d"))
        #expect(store.credential(registry: "other", repository: "a") == .basic(username: "dave", password: "e=f"))
        #expect(throws: CredentialError.self) { try store.addExplicit("nocolon") }
    }
}

struct RetryPolicyTests {
    @Test func parsesRetryAfter() {
        #expect(RetryPolicy.parseRetryAfter("3") == 3)
        #expect(RetryPolicy.parseRetryAfter(" 0 ") == 0)
        #expect(RetryPolicy.parseRetryAfter("Wed, 21 Oct 2015 07:28:00 GMT") == 0)
        #expect(RetryPolicy.parseRetryAfter("soon") == nil)
    }

    @Test func retriesOnlyRetryableErrors() async throws {
        let policy = RetryPolicy(maxAttempts: 3, initialDelay: 0.001, maximumDelay: 0.01)
        let counter = Counter()
        await #expect(throws: RegistryError.self) {
            try await policy.run { _ in
                await counter.increment()
                throw RegistryError.status(registry: "r", url: "u", status: 503, detail: "", retryAfter: 0)
            }
        }
        #expect(await counter.value == 3)
        let final = Counter()
        await #expect(throws: RegistryError.self) {
            try await policy.run { _ in
                await final.increment()
                throw RegistryError.notFound(registry: "r", what: "x", detail: "")
            }
        }
        #expect(await final.value == 1)
        let value = try await policy.run { attempt in
            if attempt < 2 {
                throw RegistryError.status(registry: "r", url: "u", status: 429, detail: "", retryAfter: 0)
            }
            return attempt
        }
        #expect(value == 2)
    }
}

actor Counter {
    var value = 0
    func increment() { value += 1 }
}

struct TagPageTests {
    @Test func followsTheNextLinkWhateverItsForm() {
        #expect(
            RegistryClient.nextPage(#"</v2/a/b/tags/list?n=2&last=t2>; rel="next""#) == "/v2/a/b/tags/list?n=2&last=t2")
        #expect(
            RegistryClient.nextPage(#"<https://r.example.com/v2/a/tags/list?last=x&n=10>; rel="next""#)
                == "/v2/a/tags/list?last=x&n=10")
        #expect(RegistryClient.nextPage(#"</v2/a/tags/list?n=2>; rel="prev""#) == nil)
        #expect(RegistryClient.nextPage(#"<https://r.example.com/v2/a/tags/list>; rel="next""#) == "/v2/a/tags/list")
        #expect(
            RegistryClient.nextPage(#"<list?last=b>; rel="next""#, from: "/v2/a/tags/list?n=2")
                == "/v2/a/tags/list?last=b")
    }
}
