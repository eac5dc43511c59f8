import Mustache

/// The console's pages (mustache: `{{x}}` is HTML-escaped; nothing here uses the unescaped forms),
/// its stylesheet and its one script. No external asset: the site is offline.
enum ConsoleTemplates {
    /// Every template renders through ``ScalarHTML``: swift-mustache's own HTML escaping walks
    /// grapheme clusters, so a `"` followed by a combining mark would pass unescaped.
    static let contentType = "SCALAR_HTML"

    static let all: [String: String] = [
        "layout": layout, "login": login, "overview": overview, "repositories": repositories,
        "repository": repository, "image": image, "message": message, "import": importPage, "imported": imported,
        "admin": admin, "result": result, "clients": clients,
    ]

    static let layout = """
        {{% CONTENT_TYPE: SCALAR_HTML}}
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>{{title}} · Ferry appliance</title>
        <link rel="stylesheet" href="/ui/static/console.css">
        <script src="/ui/static/console.js" defer></script>
        </head>
        <body>
        <header>
        <a class="brand" href="/ui/">Ferry appliance</a>
        {{#session}}
        <nav><a href="/ui/">Overview</a> <a href="/ui/repositories">Repositories</a>{{#admin}} <a href="/ui/import">Import</a> <a href="/ui/admin">Admin</a>{{/admin}}</nav>
        {{#user}}
        <form class="signout" method="post" action="/ui/logout">
        <input type="hidden" name="csrf" value="{{csrf}}">
        <span class="who">{{user}} ({{role}})</span> <button type="submit">Sign out</button>
        </form>
        {{/user}}
        {{^user}}<a class="signin" href="/ui/login">Sign in</a>{{/user}}
        {{/session}}
        </header>
        <main>
        {{$body}}{{/body}}
        </main>
        <footer>ferry-appliance {{version}}</footer>
        </body>
        </html>
        """

    static let login = """
        {{% CONTENT_TYPE: SCALAR_HTML}}
        {{<layout}}{{$body}}
        <h1>Sign in</h1>
        {{#error}}<p class="error" role="alert">{{error}}</p>{{/error}}
        <form class="login" method="post" action="/ui/login">
        <input type="hidden" name="csrf" value="{{csrf}}">
        <input type="hidden" name="next" value="{{next}}">
        <label for="user">User</label>
        <input id="user" name="user" autocomplete="username" required autofocus value="{{name}}">
        <label for="password">Password</label>
        <input id="password" name="password" type="password" autocomplete="current-password" required>
        <button type="submit">Sign in</button>
        </form>
        {{/body}}{{/layout}}
        """

    static let overview = """
        {{% CONTENT_TYPE: SCALAR_HTML}}
        {{<layout}}{{$body}}
        <h1>Overview</h1>
        <dl class="facts">
        {{#admin}}
        <dt>Repositories</dt><dd id="repositories">{{repositories}}</dd>
        <dt>Images (tags)</dt><dd id="images">{{images}}</dd>
        <dt>Stored</dt><dd id="stored">{{stored}}</dd>
        <dt>Free disk</dt><dd id="free">{{free}} of {{total}}</dd>
        {{/admin}}
        <dt>Health</dt><dd id="health">{{health}}</dd>
        <dt>Server</dt><dd>ferry-appliance {{version}}</dd>
        <dt>Certificate</dt><dd id="certificate">{{certificate}}</dd>
        </dl>
        <p><a href="/ui/repositories">Browse the repositories{{^admin}} you may pull{{/admin}}</a></p>
        {{#admin}}
        <h2>Last imports</h2>
        {{^empty(imports)}}
        <table class="list">
        <thead><tr><th>Time</th><th>Bundle</th><th>Signed by</th><th>Images</th></tr></thead>
        <tbody>
        {{#imports}}<tr><td>{{time}}</td><td>{{bundle}}</td><td>{{signer}}</td><td>{{images}}</td></tr>
        {{/imports}}
        </tbody>
        </table>
        {{/empty(imports)}}
        {{#empty(imports)}}<p>No bundle imported yet.</p>{{/empty(imports)}}
        {{/admin}}
        {{/body}}{{/layout}}
        """

    static let repositories = """
        {{% CONTENT_TYPE: SCALAR_HTML}}
        {{<layout}}{{$body}}
        <h1>Repositories</h1>
        <form class="search" method="get" action="/ui/repositories">
        <label for="q">Name or source registry</label>
        <input id="q" name="q" type="search" value="{{query}}">
        <button type="submit">Search</button>
        </form>
        {{^empty(names)}}
        <ul class="repositories">
        {{#names}}<li><a href="/ui/repository?name={{link}}">{{name}}</a> <span class="source">{{source}}</span></li>
        {{/names}}
        </ul>
        {{/empty(names)}}
        {{^names}}<p>No repository{{#query}} matches “{{query}}”{{/query}}.</p>{{/names}}
        {{#next}}<p class="pages"><a rel="next" href="/ui/repositories?q={{queryLink}}&amp;after={{next}}">Next page</a></p>{{/next}}
        {{/body}}{{/layout}}
        """

    static let repository = """
        {{% CONTENT_TYPE: SCALAR_HTML}}
        {{<layout}}{{$body}}
        <h1 class="name">{{name}}</h1>
        {{#source}}<p>Mirrors <code>{{source}}</code></p>{{/source}}
        <table class="list tags">
        <thead><tr><th>Tag</th><th>Digest</th><th>Type</th><th>Platforms</th><th>Size</th><th>Created</th><th></th></tr></thead>
        <tbody>
        {{#tags}}<tr>
        <td><a href="/ui/image?repository={{repositoryLink}}&amp;reference={{tag}}">{{tag}}</a></td>
        <td class="digest"><code>{{digest}}</code></td><td>{{kind}}<br><small class="source">{{mediaType}}</small></td><td>{{platforms}}</td><td>{{size}}</td><td>{{created}}</td>
        <td>{{#badges}}<span class="badge {{.}}">{{.}}</span> {{/badges}}</td>
        </tr>
        {{/tags}}
        </tbody>
        </table>
        {{#next}}<p class="pages"><a rel="next" href="/ui/repository?name={{repositoryLink}}&amp;after={{next}}">Next page</a></p>{{/next}}
        {{/body}}{{/layout}}
        """

    static let image = """
        {{% CONTENT_TYPE: SCALAR_HTML}}
        {{<layout}}{{$body}}
        <h1 class="name">{{repository}}{{#tag}}:{{tag}}{{/tag}}</h1>
        <dl class="facts">
        <dt>Digest</dt><dd id="digest"><code>{{digest}}</code></dd>
        <dt>Media type</dt><dd>{{mediaType}}</dd>
        {{#artifactType}}<dt>Artifact type</dt><dd>{{artifactType}}</dd>{{/artifactType}}
        <dt>Size</dt><dd>{{size}}</dd>
        {{#created}}<dt>Created</dt><dd>{{created}}</dd>{{/created}}
        {{^empty(badges)}}<dt>Carries</dt><dd>{{#badges}}<span class="badge {{.}}">{{.}}</span> {{/badges}}</dd>{{/empty(badges)}}
        </dl>
        <h2>Pull</h2>
        <ul class="pull">
        {{#pulls}}<li><span class="tool">{{tool}}</span> <code>{{command}}</code> <button type="button" class="copy" data-copy="{{command}}">Copy</button></li>
        {{/pulls}}
        </ul>
        {{^empty(platforms)}}
        <h2>Platforms</h2>
        <table class="list"><thead><tr><th>Platform</th><th>Digest</th><th>Size</th></tr></thead><tbody>
        {{#platforms}}<tr><td><a href="/ui/image?repository={{repositoryLink}}&amp;reference={{digest}}">{{platform}}</a></td><td><code>{{digest}}</code></td><td>{{size}}</td></tr>
        {{/platforms}}
        </tbody></table>
        {{/empty(platforms)}}
        {{#config}}
        <h2>Configuration</h2>
        <dl class="facts">
        {{#platform}}<dt>Platform</dt><dd>{{platform}}</dd>{{/platform}}
        {{#entrypoint}}<dt>Entrypoint</dt><dd><code>{{entrypoint}}</code></dd>{{/entrypoint}}
        {{#command}}<dt>Command</dt><dd><code>{{command}}</code></dd>{{/command}}
        {{#user}}<dt>User</dt><dd><code>{{user}}</code></dd>{{/user}}
        {{^empty(env)}}<dt>Environment</dt><dd>{{#env}}<code>{{.}}</code><br>{{/env}}</dd>{{/empty(env)}}
        {{^empty(labels)}}<dt>Labels</dt><dd>{{#labels}}<code>{{.}}</code><br>{{/labels}}</dd>{{/empty(labels)}}
        </dl>
        {{/config}}
        {{^empty(layers)}}
        <h2>Layers</h2>
        <table class="list"><thead><tr><th>#</th><th>Digest</th><th>Media type</th><th>Size</th></tr></thead><tbody>
        {{#layers}}<tr><td>{{number}}</td><td><code>{{digest}}</code></td><td>{{mediaType}}</td><td>{{size}}</td></tr>
        {{/layers}}
        </tbody></table>
        {{/empty(layers)}}
        {{^empty(referrers)}}
        <h2>Referrers</h2>
        <table class="list"><thead><tr><th>Digest</th><th>Artifact type</th></tr></thead><tbody>
        {{#referrers}}<tr><td><a href="/ui/image?repository={{repositoryLink}}&amp;reference={{digest}}"><code>{{digest}}</code></a></td><td>{{artifactType}}</td></tr>
        {{/referrers}}
        </tbody></table>
        {{/empty(referrers)}}
        {{/body}}{{/layout}}
        """

    static let importPage = """
        {{% CONTENT_TYPE: SCALAR_HTML}}
        {{<layout}}{{$body}}
        <h1>Import a bundle</h1>
        <p>A Ferry bundle, a delta or one volume of a set, as <code>ferry export</code> wrote it. It is
        verified as it arrives, in one pass, and its images appear together when it is complete and
        valid; a refused bundle changes nothing.</p>
        <form class="upload" method="post" action="/ui/import" enctype="multipart/form-data">
        <input type="hidden" name="csrf" value="{{csrf}}">
        <label for="bundle">Bundle</label>
        <input id="bundle" name="bundle" type="file" required accept=".tar">
        <button type="submit">Upload and import</button>
        </form>
        <progress id="progress" hidden></progress>
        <p id="upload-status" role="status"></p>
        {{/body}}{{/layout}}
        """

    static let imported = """
        {{% CONTENT_TYPE: SCALAR_HTML}}
        {{<layout}}{{$body}}
        <h1>{{heading}}</h1>
        {{#lines}}<p class="{{class}}">{{text}}</p>
        {{/lines}}
        {{^empty(images)}}
        <ul class="imported">
        {{#images}}<li><a href="/ui/image?repository={{repositoryLink}}&amp;reference={{reference}}">{{name}}</a></li>
        {{/images}}
        </ul>
        {{/empty(images)}}
        <p><a href="/ui/import">Import another</a></p>
        {{/body}}{{/layout}}
        """

    static let admin = """
        {{% CONTENT_TYPE: SCALAR_HTML}}
        {{<layout}}{{$body}}
        <h1>Administration</h1>
        {{#notice}}<p class="notice" role="status">{{notice}}</p>{{/notice}}
        {{#error}}<p class="error" role="alert">{{error}}</p>{{/error}}
        <h2>Users</h2>
        <table class="list users">
        <thead><tr><th>User</th><th>Role</th><th>Repositories</th><th>Change</th><th></th></tr></thead>
        <tbody>
        {{#users}}<tr>
        <td class="user">{{name}}</td><td>{{role}}</td><td>{{scope}}</td>
        <td><form method="post" action="/ui/admin/users" class="inline">
        <input type="hidden" name="csrf" value="{{csrf}}"><input type="hidden" name="action" value="update">
        <input type="hidden" name="name" value="{{name}}">
        <select name="role" aria-label="Role of {{name}}">{{#roles}}<option value="{{value}}"{{#selected}} selected{{/selected}}>{{value}}</option>{{/roles}}</select>
        <input name="prefixes" value="{{prefixes}}" placeholder="all repositories" aria-label="Repository prefixes of {{name}}">
        <input name="password" type="password" placeholder="new password (optional)" autocomplete="new-password" aria-label="New password of {{name}}">
        <button type="submit">Save</button></form></td>
        <td>{{^self}}<form method="post" action="/ui/admin/users" class="inline">
        <input type="hidden" name="csrf" value="{{csrf}}"><input type="hidden" name="action" value="remove">
        <input type="hidden" name="name" value="{{name}}"><button type="submit" class="danger">Remove</button></form>{{/self}}</td>
        </tr>
        {{/users}}
        </tbody>
        </table>
        <h3>Add a user</h3>
        <form method="post" action="/ui/admin/users" class="adduser">
        <input type="hidden" name="csrf" value="{{csrf}}"><input type="hidden" name="action" value="add">
        <label for="new-name">Name</label><input id="new-name" name="name" required>
        <label for="new-role">Role</label><select id="new-role" name="role">{{#roles}}<option value="{{value}}"{{#selected}} selected{{/selected}}>{{value}}</option>{{/roles}}</select>
        <label for="new-prefixes">Repository prefixes</label><input id="new-prefixes" name="prefixes" placeholder="all repositories">
        <label for="new-password">Password</label><input id="new-password" name="password" type="password" minlength="8" required autocomplete="new-password">
        <button type="submit">Add</button>
        </form>
        <h2>Trusted bundle keys</h2>
        {{^empty(keys)}}<table class="list"><thead><tr><th>Key ID</th><th>From</th></tr></thead><tbody>
        {{#keys}}<tr><td><code>{{keyID}}</code></td><td>{{source}}</td></tr>{{/keys}}
        </tbody></table>{{/empty(keys)}}
        {{#empty(keys)}}<p>None: unsigned bundles are imported (set <code>import.trustedKeys</code> and <code>import.requireSignature</code>).</p>{{/empty(keys)}}
        <h2>Maintenance</h2>
        <form method="post" action="/ui/admin/gc" class="inline"><input type="hidden" name="csrf" value="{{csrf}}">
        <button type="submit" name="run" value="no">Garbage collection: dry run</button>
        <button type="submit" name="run" value="yes" class="danger">Collect garbage</button></form>
        <form method="post" action="/ui/admin/check" class="inline"><input type="hidden" name="csrf" value="{{csrf}}">
        <button type="submit">Check the store (re-hashes every blob)</button></form>
        <h2>Clients</h2>
        {{#hasCA}}<p><a href="/ui/admin/clients">Client configuration</a> (docker, containerd, podman, k3s/rke2, the system trust store) · <a href="/ui/admin/ca.crt" download>Download the CA certificate</a></p>{{/hasCA}}
        {{^hasCA}}<p>This appliance serves a certificate of the operator's own.</p>{{/hasCA}}
        {{/body}}{{/layout}}
        """

    static let result = """
        {{% CONTENT_TYPE: SCALAR_HTML}}
        {{<layout}}{{$body}}
        <h1>{{heading}}</h1>
        {{#lines}}<p class="{{class}}">{{text}}</p>
        {{/lines}}
        <p><a href="{{back}}">Back</a></p>
        {{/body}}{{/layout}}
        """

    static let clients = """
        {{% CONTENT_TYPE: SCALAR_HTML}}
        {{<layout}}{{$body}}
        <h1>Client configuration for {{address}}</h1>
        <p>Paste each part on the client hosts, as root. Clients keep their image names: the
        appliance becomes the mirror of every source registry it holds.</p>
        {{#clients}}<h2>{{client}}</h2>
        <pre class="snippet">{{text}}</pre>
        <button type="button" class="copy" data-copy="{{text}}">Copy</button>
        {{/clients}}
        {{/body}}{{/layout}}
        """

    static let message = """
        {{% CONTENT_TYPE: SCALAR_HTML}}
        {{<layout}}{{$body}}
        <h1>{{heading}}</h1>
        <p class="message">{{text}}</p>
        <p><a href="/ui/">Back to the overview</a></p>
        {{/body}}{{/layout}}
        """

    static let stylesheet = """
        :root { --ink: #1d2733; --muted: #5b6b7c; --line: #d8dee6; --accent: #0b5cad; --bad: #a4161a; font-family: system-ui, sans-serif; color: var(--ink); }
        body { margin: 0; }
        header { display: flex; gap: 1.5rem; align-items: center; padding: .6rem 1.5rem; background: #0f2336; color: #fff; }
        header a { color: #fff; text-decoration: none; }
        header nav { display: flex; gap: 1rem; flex: 1; }
        .brand { font-weight: 700; }
        .signout { display: flex; gap: .5rem; align-items: center; margin: 0; }
        main { padding: 1rem 1.5rem; max-width: 75rem; }
        footer { padding: 1rem 1.5rem; color: var(--muted); font-size: .85rem; }
        h1.name { font-family: ui-monospace, monospace; font-size: 1.3rem; word-break: break-all; }
        table.list { border-collapse: collapse; width: 100%; font-size: .9rem; }
        table.list th, table.list td { text-align: left; padding: .35rem .5rem; border-bottom: 1px solid var(--line); vertical-align: top; }
        td.digest code, td code { font-size: .8rem; word-break: break-all; }
        dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .3rem 1rem; }
        dl.facts dt { color: var(--muted); }
        dl.facts dd { margin: 0; word-break: break-all; }
        .badge { display: inline-block; padding: 0 .4rem; border-radius: .6rem; background: #e3eefa; color: var(--accent); font-size: .75rem; }
        .badge.signature { background: #e2f4e6; color: #1b6b2f; }
        .error { color: var(--bad); font-weight: 600; }
        form.login { display: grid; gap: .4rem; max-width: 20rem; }
        form.search { display: flex; gap: .5rem; align-items: center; margin-bottom: 1rem; }
        ul.repositories { list-style: none; padding: 0; columns: 2; }
        ul.repositories li { padding: .15rem 0; font-family: ui-monospace, monospace; font-size: .9rem; }
        .source { color: var(--muted); font-size: .8rem; }
        ul.pull { list-style: none; padding: 0; }
        ul.pull li { margin: .3rem 0; }
        .tool { display: inline-block; min-width: 6rem; color: var(--muted); }
        button { font: inherit; padding: .2rem .7rem; }
        button.danger { color: var(--bad); }
        form.inline { display: inline-flex; gap: .4rem; align-items: center; flex-wrap: wrap; margin: .2rem 0; }
        form.adduser { display: grid; grid-template-columns: max-content 16rem; gap: .4rem 1rem; }
        form.adduser button { grid-column: 2; justify-self: start; }
        pre.snippet { background: #f4f6f8; padding: .6rem; overflow-x: auto; font-size: .8rem; }
        .notice { color: #1b6b2f; font-weight: 600; }
        """

    /// The copy buttons, and the upload's progress (the pages work without it: the commands can be
    /// selected, and the form posts as it is).
    static let script = """
        var form = document.querySelector("form.upload");
        if (form && window.XMLHttpRequest && window.FormData) {
          form.addEventListener("submit", function (event) {
            event.preventDefault();
            var progress = document.getElementById("progress");
            var status = document.getElementById("upload-status");
            var mib = function (n) { return (n / 1048576).toFixed(1) + " MiB"; };
            var started = Date.now();
            var xhr = new XMLHttpRequest();
            xhr.open("POST", form.action);
            xhr.upload.onprogress = function (e) {
              if (!e.lengthComputable) return;
              progress.max = e.total;
              progress.value = e.loaded;
              var seconds = (Date.now() - started) / 1000;
              status.textContent = mib(e.loaded) + " of " + mib(e.total) +
                (seconds > 0 ? ", " + mib(e.loaded / seconds) + "/s" : "");
            };
            xhr.upload.onload = function () { status.textContent = "Uploaded; verifying and importing…"; };
            xhr.onload = function () { document.open(); document.write(xhr.responseText); document.close(); };
            xhr.onerror = function () { status.textContent = "The upload failed: the connection was lost."; };
            progress.hidden = false;
            form.querySelector("button").disabled = true;
            xhr.send(new FormData(form));
          });
        }

        document.addEventListener("click", function (event) {
          var button = event.target.closest("button.copy");
          if (!button || !navigator.clipboard) return;
          navigator.clipboard.writeText(button.getAttribute("data-copy")).then(function () {
            button.textContent = "Copied";
            setTimeout(function () { button.textContent = "Copy"; }, 1500);
          });
        });
        """
}

/// HTML escaping by Unicode scalar: `<`, `>`, `&`, `"` and `'` are replaced wherever they occur,
/// also when a combining mark follows them.
struct ScalarHTML: MustacheContentType {
    func escapeText(_ text: String) -> String {
        var escaped = ""
        escaped.unicodeScalars.reserveCapacity(text.unicodeScalars.count)
        for scalar in text.unicodeScalars {
            switch scalar {
            case "<": escaped += "&lt;"
            case ">": escaped += "&gt;"
            case "&": escaped += "&amp;"
            case "\"": escaped += "&quot;"
            case "'": escaped += "&#39;"
            default: escaped.unicodeScalars.append(scalar)
            }
        }
        return escaped
    }
}
