//! A headless Chromium driven over W3C WebDriver (chromedriver), for the
//! web UI's tests (`tests/ui.rs`).
//!
//! The protocol is a few JSON calls over loopback HTTP, made here with the
//! reqwest client the tests already build, rather than with a WebDriver
//! crate: `fantoccini` brings the `webdriver` crate (and through it ICU's
//! segmenter, `time` and `cookie`) for the five calls these tests make.
//! Pages are driven by running scripts in them (`execute/sync`), which is
//! also how the tests read what the page shows.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;

/// How long a page gets to show what a test waits for: generous, since
/// the two cores here may be building or running other tests.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// chromedriver and the browser it drives, closed on drop.
pub struct Browser {
    driver: Child,
    endpoint: String,
    session: String,
    client: reqwest::Client,
    /// The browser's profile, removed on drop.
    _profile: TempDir,
}

/// An executable on `PATH` (or named by `variable`), the first of `names`.
fn find(variable: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(variable) {
        let path = PathBuf::from(path);
        return path.is_file().then_some(path);
    }
    let path = std::env::var_os("PATH")?;
    names
        .iter()
        .find_map(|name| std::env::split_paths(&path).map(|dir| dir.join(name)).find(|file| file.is_file()))
}

impl Browser {
    /// Starts chromedriver and a headless Chromium; `None` (with a message
    /// why) when either is not installed and `CI` is unset. Under `CI`
    /// their absence fails the test: the tests/run script installs them.
    pub async fn start() -> Option<Self> {
        let driver = find("CHROMEDRIVER", &["chromedriver", "chromium-driver"]);
        let chrome = find("CHROME", &["chromium", "chromium-browser", "google-chrome"]);
        let (Some(driver), Some(chrome)) = (driver, chrome) else {
            let message = "chromium and chromedriver are not installed (Debian: apt-get install chromium \
                           chromium-driver; tests/run installs them)";
            if std::env::var_os("CI").is_some() {
                panic!("{message}");
            }
            eprintln!("SKIPPED: {message}");
            return None;
        };
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let endpoint = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
        let started = Instant::now();
        while client.get(format!("{endpoint}/status")).send().await.is_err() {
            assert!(started.elapsed() < PATIENCE, "chromedriver did not answer on {endpoint}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        // As root (containers, CI) Chromium runs only without its sandbox.
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--window-size=1200,900".to_owned(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": chrome, "args": args },
            "goog:loggingPrefs": { "browser": "ALL" },
        }}});
        let mut browser = Self { driver, endpoint, session: String::new(), client, _profile: profile };
        let created = browser.call(reqwest::Method::POST, "/session", capabilities).await;
        browser.session = created["sessionId"].as_str().expect("a WebDriver session").to_owned();
        Some(browser)
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let request = self.client.request(method, format!("{}{path}", self.endpoint));
        let request = if body.is_null() { request } else { request.json(&body) };
        let response = request.send();
        let answer: Value = response.await.unwrap().json().await.unwrap();
        let value = answer["value"].clone();
        assert!(value.get("error").is_none(), "WebDriver {path}: {value}");
        value
    }

    fn path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    /// Opens `url` as if typed in the address bar.
    pub async fn open(&self, url: &str) {
        self.call(reqwest::Method::POST, &self.path("/url"), json!({ "url": url })).await;
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page.
    pub async fn run(&self, script: &str, args: Value) -> Value {
        self.call(
            reqwest::Method::POST,
            &self.path("/execute/sync"),
            json!({ "script": script, "args": args }),
        )
        .await
    }

    /// Waits until `expression` is truthy in the page, and returns it.
    pub async fn wait_for(&self, expression: &str) -> Value {
        let started = Instant::now();
        let script = format!("try {{ return ({expression}) || null; }} catch (e) {{ return null; }}");
        loop {
            let value = self.run(&script, json!([])).await;
            if !value.is_null() {
                return value;
            }
            if started.elapsed() > PATIENCE {
                let page = self.run("return document.body.innerText", json!([])).await;
                panic!("waited {PATIENCE:?} for `{expression}`; the page shows:\n{page}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for an element, then clicks it.
    pub async fn click(&self, selector: &str) {
        self.wait_for(&format!("document.querySelector({selector:?})")).await;
        self.run("document.querySelector(arguments[0]).click()", json!([selector])).await;
    }

    /// Sets a form field's value as typing would.
    pub async fn fill(&self, selector: &str, value: &str) {
        self.wait_for(&format!("document.querySelector({selector:?})")).await;
        let script = "const field = document.querySelector(arguments[0]); field.value = arguments[1]; \
                      field.dispatchEvent(new Event('input', { bubbles: true }));";
        self.run(script, json!([selector, value])).await;
    }

    /// Presses keys as a person would on the page (WebDriver's key
    /// actions): each character of `keys` down and up, in order; `\u{E007}`
    /// is Enter.
    pub async fn press(&self, keys: &str) {
        let actions: Vec<Value> = (keys.chars())
            .flat_map(|key| {
                [json!({ "type": "keyDown", "value": key }), json!({ "type": "keyUp", "value": key })]
            })
            .collect();
        let body = json!({ "actions": [{ "type": "key", "id": "keyboard", "actions": actions }] });
        self.call(reqwest::Method::POST, &self.path("/actions"), body).await;
    }

    /// The text of the first element `selector` matches, once there.
    pub async fn text(&self, selector: &str) -> String {
        let expression = format!("document.querySelector({selector:?})?.innerText");
        self.wait_for(&expression).await.as_str().unwrap_or_default().to_owned()
    }

    /// Saves what the browser shows as `{name}.png` in the test run's
    /// `ui-screenshots` folder (under the target directory), for people to
    /// look at; answers its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        use base64::Engine as _;
        let encoded = self.call(reqwest::Method::GET, &self.path("/screenshot"), Value::Null).await;
        let png =
            base64::engine::general_purpose::STANDARD.decode(encoded.as_str().unwrap_or_default()).unwrap();
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// Errors the page reported: uncaught ones the UI collected
    /// (`window.uiErrors`), and the console's severe messages but for
    /// `401` answers, which the browser logs and the UI answers with its
    /// login form.
    pub async fn errors(&self) -> Vec<String> {
        let collected = self.run("return window.uiErrors || ['the UI did not start']", json!([])).await;
        let mut errors: Vec<String> =
            collected.as_array().into_iter().flatten().map(|error| error.to_string()).collect();
        let logs = self.client.post(format!("{}{}", self.endpoint, self.path("/se/log")));
        if let Ok(response) = logs.json(&json!({ "type": "browser" })).send().await {
            let answer: Value = response.json().await.unwrap_or_default();
            for entry in answer["value"].as_array().into_iter().flatten() {
                let message = entry["message"].as_str().unwrap_or_default();
                if entry["level"] == "SEVERE" && !message.contains("status of 401") {
                    errors.push(entry["message"].to_string());
                }
            }
        }
        errors
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session closes the browser (killing chromedriver
        // alone would leave it running); no runtime here, so by hand.
        if let Ok(mut connection) = TcpStream::connect(self.endpoint.trim_start_matches("http://")) {
            let request = format!(
                "DELETE /session/{} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                self.session
            );
            let _ = connection.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = connection.write_all(request.as_bytes());
            let _ = connection.read_to_end(&mut Vec::new());
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
