"""Drives the appliance's web console in headless Chromium (Debian's chromium and chromium-driver,
through Debian's python3-selenium), over the appliance's own TLS: the server's key is pinned with
--ignore-certificate-errors-spki-list, so no other certificate is accepted.

  console_browser.py --url https://127.0.0.1:PORT --spki BASE64 --ca CA.crt --screenshots DIR
      --admin USER:PASS --limited USER:PASS --repository REPO --tag TAG --digest DIGEST
      --hidden REPO --upload BUNDLE --tampered BUNDLE --uploaded REPO:TAG

Prints one line per check; exits 1 at the first failure, with the page's text.
"""
import argparse
import atexit
import shutil
import ssl
import sys
import tempfile
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait


def main() -> int:
    parser = argparse.ArgumentParser()
    for name in ["url", "spki", "ca", "screenshots", "admin", "limited", "repository", "tag", "digest", "hidden",
                 "upload", "tampered", "uploaded"]:
        parser.add_argument(f"--{name}", required=True)
    args = parser.parse_args()
    profile = tempfile.mkdtemp(prefix="ferry-chromium-")
    atexit.register(shutil.rmtree, profile, ignore_errors=True)  # after driver.quit(), on every exit
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,900", f"--user-data-dir={profile}",
                 f"--ignore-certificate-errors-spki-list={args.spki}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(30)

    def check(condition, what):
        if not condition:
            print(f"FAILED: {what}\nat {driver.current_url}\n{driver.find_element(By.TAG_NAME, 'body').text}",
                  flush=True)
            driver.quit()
            sys.exit(1)
        print(f"ok: {what}", flush=True)

    def sign_in(credentials):
        user, password = credentials.split(":", 1)
        driver.get(f"{args.url}/ui/login")
        driver.find_element(By.ID, "user").clear()
        driver.find_element(By.ID, "user").send_keys(user)
        driver.find_element(By.ID, "password").send_keys(password)
        submit(driver.find_element(By.CSS_SELECTOR, "form.login button"))

    def submit(button):
        # A click does not wait for the page it leads to: wait until this one is gone. While the old
        # page is torn down, Chromium may answer "Node with given id does not belong to the
        # document" instead of "stale element": gone all the same (staleness_of knows only the latter).
        button.click()

        def gone(_):
            try:
                button.is_enabled()
                return False
            except WebDriverException:
                return True

        WebDriverWait(driver, 15).until(gone)

    def sign_out():
        submit(driver.find_element(By.CSS_SELECTOR, "form.signout button"))

    try:
        # Nothing is visible without signing in.
        driver.get(f"{args.url}/ui/")
        check("/ui/login" in driver.current_url and "Sign in" in driver.title, "the console asks to sign in")
        admin_user = args.admin.split(":", 1)[0]
        sign_in(f"{admin_user}:not-the-password")
        check("Wrong user or password" in driver.page_source, "a wrong password is refused")
        sign_in(args.admin)
        check(driver.current_url.endswith("/ui/") and driver.find_element(By.ID, "repositories").text == "2",
              "the admin signs in and sees the overview")
        check(driver.find_element(By.ID, "health").text == "ok", "the overview shows health")
        check("expires" in driver.find_element(By.ID, "certificate").text, "the overview shows the certificate expiry")
        driver.save_screenshot(f"{args.screenshots}/overview.png")

        # Search, browse to the image, and the digest shown is upstream's.
        driver.get(f"{args.url}/ui/repositories")
        search = args.repository.split("/")[-1]
        driver.find_element(By.ID, "q").send_keys(search)
        submit(driver.find_element(By.CSS_SELECTOR, "form.search button"))
        links = [a.text for a in driver.find_elements(By.CSS_SELECTOR, "ul.repositories a")]
        check(args.repository in links and all(search in link for link in links), f"searching '{search}' finds it")
        driver.save_screenshot(f"{args.screenshots}/repositories.png")
        driver.find_element(By.LINK_TEXT, args.repository).click()
        check(args.digest in driver.page_source, "the repository page lists the tag's digest")
        driver.find_element(By.LINK_TEXT, args.tag).click()
        check(driver.find_element(By.ID, "digest").text == args.digest, "the image page shows upstream's digest")
        commands = [c.text for c in driver.find_elements(By.CSS_SELECTOR, "ul.pull code")]
        check(any(c.startswith("podman pull ") and c.endswith(f"{args.repository}:{args.tag}") for c in commands),
              "the image page shows the pull commands")
        driver.save_screenshot(f"{args.screenshots}/image.png")
        driver.get(f"{args.url}/ui/repositories?q=no-such-thing-here")
        check("No repository matches" in driver.page_source, "a search without results says so")

        # Import through the page: the file input, progress, the result, the image listed.
        def upload(path):
            driver.get(f"{args.url}/ui/import")
            driver.find_element(By.ID, "bundle").send_keys(path)
            driver.find_element(By.CSS_SELECTOR, "form.upload button").click()
            def finished(d):
                # The page is replaced by the script when the upload's answer arrives: an element
                # seen a moment ago may be gone.
                try:
                    return d.find_element(By.CSS_SELECTOR, "main h1").text.startswith(("Imported", "Refused"))
                except WebDriverException:
                    return False
            WebDriverWait(driver, 60).until(finished)
        upload(args.tampered)
        check(driver.find_element(By.CSS_SELECTOR, "main h1").text.startswith("Refused") and
              "nothing changed" in driver.page_source, "a tampered bundle is refused, saying why")
        driver.get(f"{args.url}/ui/repositories")
        check(args.uploaded.split(":")[0] not in driver.page_source, "the refused bundle changed nothing")
        upload(args.upload)
        check(driver.find_element(By.CSS_SELECTOR, "main h1").text.startswith("Imported") and
              args.uploaded in [a.text for a in driver.find_elements(By.CSS_SELECTOR, "ul.imported a")],
              "an uploaded bundle is imported and its image listed")
        driver.save_screenshot(f"{args.screenshots}/imported.png")

        # Admin pages: users added, changed and removed; gc dry run; check; client configuration; CA.
        driver.get(f"{args.url}/ui/admin")
        driver.find_element(By.ID, "new-name").send_keys("ops")
        driver.find_element(By.ID, "new-prefixes").send_keys("team/")
        driver.find_element(By.ID, "new-password").send_keys("ops-password-1")
        submit(driver.find_element(By.CSS_SELECTOR, "form.adduser button"))
        users = [td.text for td in driver.find_elements(By.CSS_SELECTOR, "td.user")]
        check("User ops saved." in driver.page_source and "ops" in users, "the admin adds a user")
        row = [r for r in driver.find_elements(By.CSS_SELECTOR, "table.users tbody tr")
               if r.find_element(By.CSS_SELECTOR, "td.user").text == "ops"][0]
        row.find_element(By.CSS_SELECTOR, "select[name=role] option[value=push]").click()
        submit(row.find_element(By.CSS_SELECTOR, "form.inline button"))
        row = [r for r in driver.find_elements(By.CSS_SELECTOR, "table.users tbody tr")
               if r.find_element(By.CSS_SELECTOR, "td.user").text == "ops"][0]
        cells = row.find_elements(By.TAG_NAME, "td")
        check(cells[1].text == "push" and cells[2].text == "team/",
              "the admin changes a user's role, keeping the prefix")
        submit(row.find_element(By.CSS_SELECTOR, "button.danger"))
        check("User ops removed." in driver.page_source and
              "ops" not in [td.text for td in driver.find_elements(By.CSS_SELECTOR, "td.user")], "the admin removes a user")
        driver.save_screenshot(f"{args.screenshots}/admin.png")
        submit(driver.find_element(By.CSS_SELECTOR, "button[name=run][value=no]"))
        check("would remove" in driver.page_source and "nothing was removed" in driver.page_source,
              "a garbage collection dry run says what it would free")
        driver.get(f"{args.url}/ui/admin")
        submit(driver.find_element(By.XPATH, "//button[contains(., 'Check the store')]"))
        check("no problem" in driver.page_source, "the store check finds no problem")
        driver.get(f"{args.url}/ui/admin/clients")
        check("hosts.toml" in driver.page_source and "registries.conf.d" in driver.page_source,
              "the client configuration page shows containerd's and podman's snippets")
        cookie = "; ".join(f"{c['name']}={c['value']}" for c in driver.get_cookies())
        context = ssl.create_default_context(cafile=args.ca)
        pem = urllib.request.urlopen(urllib.request.Request(f"{args.url}/ui/admin/ca.crt", headers={"Cookie": cookie}),
                                     context=context).read().decode()
        check(pem == open(args.ca).read(), "the CA certificate downloads")

        # HTML in what a page shows is text, never markup.
        driver.get(f"{args.url}/ui/repositories?q=%3Cb%3Ebold%3C%2Fb%3E")
        check(not driver.find_elements(By.CSS_SELECTOR, "main b") and "<b>bold</b>" in
              driver.find_element(By.TAG_NAME, "main").text, "HTML in a search is shown as text")

        # A form without the session's CSRF token is refused (the session cookie alone is not enough).
        def post_outside(path, body):
            # The browser's session cookie, in a request made outside the browser: its status.
            cookie = "; ".join(f"{c['name']}={c['value']}" for c in driver.get_cookies())
            request = urllib.request.Request(f"{args.url}{path}", data=body, method="POST",
                                             headers={"Cookie": cookie,
                                                      "Content-Type": "application/x-www-form-urlencoded"})
            try:
                urllib.request.urlopen(request, context=ssl.create_default_context(cafile=args.ca))
                return 200
            except urllib.error.HTTPError as error:
                return error.code
        status = post_outside("/ui/logout", b"csrf=forged")
        check(status == 403, f"a form with a forged CSRF token is refused ({status})")
        driver.get(f"{args.url}/ui/")
        check(driver.find_elements(By.CSS_SELECTOR, "form.signout"), "the session survived the forged form")
        cookies = driver.get_cookies()
        session = [c for c in cookies if c["name"] == "ferry_session"]
        check(session and all(c.get("httpOnly") and c.get("secure") and c.get("sameSite") == "Strict" for c in session),
              "the session cookie is HttpOnly, Secure and SameSite=Strict")
        # The admin forms too: adding a user without the token is refused, and adds nobody.
        status = post_outside("/ui/admin/users", b"action=add&name=intruder&role=admin&password=intruder-pass")
        driver.get(f"{args.url}/ui/admin")
        check(status == 403 and "intruder" not in driver.page_source, "an admin form without the token is refused")
        sign_out()
        driver.get(f"{args.url}/ui/repositories")
        check("/ui/login" in driver.current_url, "after signing out, pages ask to sign in again")

        # A prefix-limited user sees only their repositories; another's page reads as not found.
        sign_in(args.limited)
        check(not driver.find_elements(By.ID, "repositories") and not driver.find_elements(By.ID, "stored"),
              "the limited user's overview shows nothing of the whole store")
        driver.get(f"{args.url}/ui/import")
        check("This page is for administrators" in driver.page_source and
              not driver.find_elements(By.LINK_TEXT, "Import"), "the limited user gets no import page")
        driver.get(f"{args.url}/ui/admin")
        check("This page is for administrators" in driver.page_source and
              not driver.find_elements(By.LINK_TEXT, "Admin"), "the limited user gets no admin page")
        driver.get(f"{args.url}/ui/repositories")
        links = [a.text for a in driver.find_elements(By.CSS_SELECTOR, "ul.repositories a")]
        check(args.hidden not in links and links, f"the limited user sees {len(links)} repositories, not {args.hidden}")
        driver.get(f"{args.url}/ui/repository?name={args.hidden}")
        check("There is no such repository" in driver.page_source, "another repository's page is not found")
        sign_out()

        # The failed-login limit applies to the console.
        limited_user = args.limited.split(":", 1)[0]
        for _ in range(6):
            sign_in(f"{limited_user}:wrong-again")
        check("Too many failed sign-ins" in driver.page_source, "repeated wrong passwords are locked out")
    finally:
        driver.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
