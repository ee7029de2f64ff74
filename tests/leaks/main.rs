//! Secret-leak scan (issue 8): every command runs with known marker secrets (values, the
//! keystore passphrase, access-key secrets, STS and Vault tokens, a PKCS#11 PIN), and nothing
//! but the output the user asked for may contain one: not stderr, not other stdout, not the
//! keystore, not the audit trail, not the working directory's other files, not TMPDIR.
//!
//! envseal has no verbose or debug log level: stderr is all it ever prints, and every command
//! here is checked on it. Data keys are random, so the test learns them on the wire: the CLI
//! seals and opens a file through `envseal kms serve` behind a small recording proxy, and every
//! data key in a GenerateDataKey or Decrypt answer (base64, hex) becomes a marker too.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_envseal");
const VALUE: &str = "MARKERVALUE7f3a9";
const VALUE2: &str = "MARKERSETVALUE44b";
const PASS: &str = "MARKERPASS91c2e";
const AK_SECRET: &str = "MARKERAKSECRET55d";
const STS_TOKEN: &str = "MARKERSTSTOKEN88a";
const VAULT_TOKEN: &str = "MARKERVAULT3d71";
const PIN: &str = "MARKERPIN6e02";
const MARKERS: &[&str] = &[VALUE, VALUE2, PASS, AK_SECRET, STS_TOKEN, VAULT_TOKEN, PIN];

struct World {
    _dir: tempfile::TempDir,
    root: PathBuf,
    work: PathBuf,
    home: PathBuf,
    tmp: PathBuf,
    /// (command, stream, text) of everything that must be clean.
    seen: Vec<(String, &'static str, String)>,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        let (work, home, tmp) = (root.join("work"), root.join("home"), root.join("tmp"));
        for d in [&work, &tmp, &root.join("user")] {
            fs::create_dir_all(d).unwrap();
        }
        World { _dir: dir, root, work, home, tmp, seen: Vec::new() }
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(BIN);
        for v in [
            "ENVSEAL_KMS",
            "ENVSEAL_KEY",
            "ENVSEAL_MASTER_KEY_FILE",
            "ENVSEAL_PROFILE",
            "XDG_CONFIG_HOME",
            "XDG_DATA_HOME",
        ] {
            c.env_remove(v);
        }
        c.current_dir(&self.work)
            .env("ENVSEAL_HOME", &self.home)
            .env("ENVSEAL_PASSPHRASE", PASS)
            .env("HOME", self.root.join("user"))
            .env("TMPDIR", &self.tmp)
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null());
        c
    }

    /// Runs a command; `output_is_requested`: its stdout is the plaintext the user asked for.
    fn run(&mut self, args: &[&str], output_is_requested: bool, stdin: Option<&str>) -> Output {
        let mut c = self.cmd();
        c.args(args);
        let out = match stdin {
            Some(text) => {
                use std::io::Write;
                let mut child = c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
                child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
                child.wait_with_output().unwrap()
            }
            None => c.output().unwrap(),
        };
        let name = args.join(" ");
        self.seen.push((name.clone(), "stderr", String::from_utf8_lossy(&out.stderr).into_owned()));
        if !output_is_requested {
            self.seen.push((name, "stdout", String::from_utf8_lossy(&out.stdout).into_owned()));
        }
        out
    }

    fn ok(&mut self, args: &[&str], output_is_requested: bool) -> Output {
        let out = self.run(args, output_is_requested, None);
        assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        out
    }
}

/// Every file under `dir` (recursively) whose content holds a marker, except `allowed`.
fn dirty_files(dir: &Path, allowed: &[PathBuf], extra: &[String]) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else { return out };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(dirty_files(&p, allowed, extra));
        } else if !allowed.contains(&p) {
            let bytes = fs::read(&p).unwrap_or_default();
            let text = String::from_utf8_lossy(&bytes);
            for m in MARKERS.iter().copied().chain(extra.iter().map(String::as_str)) {
                if text.contains(m) {
                    out.push((p.clone(), m.to_owned()));
                }
            }
        }
    }
    out
}

#[test]
fn no_command_leaks_a_marker_secret() {
    let mut w = World::new();
    let f = |n: &str| n.to_owned();
    fs::write(w.work.join("app.env"), format!("DB_PASSWORD={VALUE}\nPORT=8080\n")).unwrap();
    fs::write(w.work.join("app.json"), format!("{{\"db\": {{\"password\": \"{VALUE}\"}}, \"port\": 1}}")).unwrap();
    fs::write(w.work.join("app.yaml"), format!("db:\n  password: {VALUE}\nport: 1\n")).unwrap();
    fs::write(w.work.join("blob.bin"), format!("binary {VALUE} data").repeat(1000)).unwrap();

    // Keystore with a passphrase; sealing every format; reading back (requested output).
    w.ok(&["init", "--passphrase"], false);
    for file in ["app.env", "app.json", "app.yaml"] {
        w.ok(&["encrypt", file, "--json"], false);
    }
    w.ok(&["encrypt", "blob.bin", "-o", "blob.sealed"], false);
    w.ok(&["decrypt", "app.env"], true);
    w.ok(&["decrypt", "blob.sealed", "-o", "-"], true);
    w.ok(&["get", "app.json", "db.password"], true);
    w.ok(&["run", "-f", "app.env", "--", "sh", "-c", "test -n \"$DB_PASSWORD\""], false);
    w.run(&["set", "app.env", "API_KEY", "-"], false, Some(VALUE2));
    w.ok(&["unset", "app.env", "PORT"], false);
    w.ok(&["inspect", "app.env", "--json"], false);
    w.ok(&["inspect", "blob.sealed"], false);
    w.ok(&["keys", "list", "--json"], false);
    w.ok(&["keys", "rotate", "alias/default"], false);
    w.ok(&["rewrap", "app.env", "app.json", "app.yaml", "--json"], false);
    w.ok(&["config", "explain", "app.env"], false);
    // Edit with a scripted editor that adds a value.
    let editor = w.root.join("editor.sh");
    fs::write(&editor, format!("#!/bin/sh\necho \"NEW_SECRET={VALUE2}\" >> \"$1\"\n")).unwrap();
    fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = w.cmd().args(["edit", "app.env"]).env("EDITOR", &editor).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    w.seen.push((f("edit"), "stderr", String::from_utf8_lossy(&out.stderr).into_owned()));
    w.seen.push((f("edit"), "stdout", String::from_utf8_lossy(&out.stdout).into_owned()));

    // Error paths: wrong context, tampered, truncated, wrong passphrase, bad backends.
    w.run(&["decrypt", "app.env", "--context", "env=prod"], false, None);
    let mut sealed = fs::read(w.work.join("blob.sealed")).unwrap();
    let n = sealed.len();
    sealed[n / 2] ^= 1;
    fs::write(w.work.join("tampered.sealed"), &sealed).unwrap();
    w.run(&["decrypt", "tampered.sealed", "-o", "-"], false, None);
    fs::write(w.work.join("cut.sealed"), &sealed[..n / 3]).unwrap();
    w.run(&["decrypt", "cut.sealed", "-o", "-"], false, None);
    let out = w.cmd().args(["decrypt", "app.env"]).env("ENVSEAL_PASSPHRASE", "wrong").output().unwrap();
    w.seen.push((f("decrypt (wrong passphrase)"), "stderr", String::from_utf8_lossy(&out.stderr).into_owned()));
    let out = w
        .cmd()
        .args(["encrypt", "-", "--kms", "vault-transit://127.0.0.1:9/transit/k"])
        .env("VAULT_TOKEN", VAULT_TOKEN)
        .env("VAULT_ADDR", "http://127.0.0.1:9")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    w.seen.push((f("vault"), "stderr", String::from_utf8_lossy(&out.stderr).into_owned()));
    let out = w
        .cmd()
        .args(["encrypt", "-", "--kms", "pkcs11:token=none;object=k"])
        .env("ENVSEAL_PKCS11_PIN", PIN)
        .env("ENVSEAL_PKCS11_MODULE", "/nonexistent/libpkcs11.so")
        .output()
        .unwrap();
    w.seen.push((f("pkcs11"), "stderr", String::from_utf8_lossy(&out.stderr).into_owned()));

    // kms serve: an IAM file with a marker secret and a marker STS token; a client that signs
    // with the right and a wrong secret (the Alibaba backend of envseal itself).
    let iam = w.root.join("iam.json");
    fs::write(
        &iam,
        format!(
            r#"{{"access_keys":[{{"id":"AKLEAKTEST","secret":"{AK_SECRET}","principal":"t"}},
            {{"id":"STS.LEAK","secret":"{AK_SECRET}x","principal":"s","security_token":"{STS_TOKEN}"}}]}}"#
        ),
    )
    .unwrap();
    let log = w.root.join("serve.log");
    let audit = w.root.join("audit.log");
    let mut server = w
        .cmd()
        .args(["kms", "serve", "--port", "0", "--iam", iam.to_str().unwrap(), "--audit-log", audit.to_str().unwrap()])
        .args(["--audit-key", w.root.join("audit.key").to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut banner = String::new();
    {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(server.stdout.take().unwrap()).lines();
        for l in lines.by_ref() {
            let l = l.unwrap();
            banner.push_str(&l);
            banner.push('\n');
            if l.starts_with("Ready.") {
                break;
            }
        }
        std::thread::spawn(move || lines.for_each(drop));
    }
    let upstream = banner.lines().find_map(|l| l.trim().strip_prefix("endpoint: http://")).unwrap().to_owned();
    let (addr, answers) = recording_proxy(upstream);
    for (secret, token) in
        [(AK_SECRET.to_owned(), None), (format!("{AK_SECRET}x"), Some(STS_TOKEN)), ("wrong".to_owned(), None)]
    {
        let id = if token.is_some() { "STS.LEAK" } else { "AKLEAKTEST" };
        let mut c = w.cmd();
        c.args(["keys", "list", "--kms", "alibaba-kms:cn-hangzhou/alias/default"])
            .env("ALIBABA_CLOUD_ACCESS_KEY_ID", id)
            .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", &secret)
            .env("ENVSEAL_ALIBABA_KMS_ENDPOINT", format!("http://{addr}"));
        if let Some(t) = token {
            c.env("ALIBABA_CLOUD_SECURITY_TOKEN", t);
        }
        let out = c.output().unwrap();
        w.seen.push((format!("alibaba client {id}"), "stderr", String::from_utf8_lossy(&out.stderr).into_owned()));
        w.seen.push((format!("alibaba client {id}"), "stdout", String::from_utf8_lossy(&out.stdout).into_owned()));
    }
    // Seal and open a file through the emulator: the data keys cross the recording proxy.
    fs::write(w.work.join("wire.env"), format!("WIRE={VALUE}\n")).unwrap();
    for args in [
        vec!["encrypt", "wire.env", "--kms", "alibaba-kms:cn-hangzhou/alias/default"],
        vec!["decrypt", "wire.env"],
        vec!["rewrap", "wire.env", "--to", "alibaba-kms:cn-hangzhou/alias/default"],
    ] {
        let out = w
            .cmd()
            .args(&args)
            .env("ALIBABA_CLOUD_ACCESS_KEY_ID", "AKLEAKTEST")
            .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", AK_SECRET)
            .env("ALIBABA_CLOUD_REGION_ID", "cn-hangzhou")
            .env("ENVSEAL_ALIBABA_KMS_ENDPOINT", format!("http://{addr}"))
            .output()
            .unwrap();
        assert!(out.status.success() || args[0] == "rewrap", "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        w.seen.push((args.join(" "), "stderr", String::from_utf8_lossy(&out.stderr).into_owned()));
        if args[0] != "decrypt" {
            w.seen.push((args.join(" "), "stdout", String::from_utf8_lossy(&out.stdout).into_owned()));
        }
    }
    let _ = Command::new("kill").args(["-TERM", &server.id().to_string()]).status();
    let _ = server.wait();
    w.seen.push((f("kms serve"), "banner", banner));
    w.seen.push((f("kms serve"), "stderr", fs::read_to_string(&log).unwrap_or_default()));
    w.seen.push((f("kms serve"), "audit log", fs::read_to_string(&audit).unwrap_or_default()));

    // The data keys seen on the wire, in the forms a leak would take.
    let mut data_keys: Vec<String> = Vec::new();
    for answer in answers.lock().unwrap().iter() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(answer) else { continue };
        if let Some(b64) = v["Plaintext"].as_str() {
            use base64::Engine as _;
            let bytes = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
            data_keys.extend([b64.to_owned(), hex::encode(&bytes), hex::encode_upper(&bytes)]);
            data_keys.push(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes));
        }
    }
    assert!(data_keys.len() >= 8, "the wire showed {} data-key forms", data_keys.len());

    // The scan.
    let mut hits = Vec::new();
    for (cmd, stream, text) in &w.seen {
        for m in MARKERS.iter().copied().chain(data_keys.iter().map(String::as_str)) {
            if text.contains(m) {
                hits.push(format!("{m} in {stream} of `{cmd}`"));
            }
        }
    }
    // Files: the keystore, TMPDIR and the working directory (the sealed files, the user's
    // plaintext inputs not sealed in place being the only allowed holders).
    let allowed: Vec<PathBuf> = vec![w.root.join("iam.json"), w.root.join("editor.sh"), w.work.join("blob.bin")];
    for (p, m) in dirty_files(&w.home, &allowed, &data_keys)
        .into_iter()
        .chain(dirty_files(&w.tmp, &allowed, &data_keys))
        .chain(dirty_files(&w.work, &allowed, &data_keys))
        .chain(dirty_files(&w.root.join("user"), &allowed, &data_keys))
    {
        hits.push(format!("{m} in file {}", p.display()));
    }
    assert!(hits.is_empty(), "marker secrets leaked:\n{}", hits.join("\n"));
    assert!(w.seen.len() > 40, "the scan covered {} outputs", w.seen.len());
}

/// A proxy in front of `upstream` that keeps every answer body: one request per connection.
fn recording_proxy(upstream: String) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let answers = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = answers.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let (up, keep) = (upstream.clone(), keep.clone());
            std::thread::spawn(move || -> std::io::Result<()> {
                let mut conn = conn;
                let mut reader = BufReader::new(conn.try_clone()?);
                let (mut head, mut len) = (Vec::new(), 0usize);
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line)? == 0 {
                        return Ok(());
                    }
                    let lower = line.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    if lower.starts_with("connection:") {
                        continue;
                    }
                    if line == "\r\n" {
                        head.extend_from_slice(b"Connection: close\r\n\r\n");
                        break;
                    }
                    head.extend_from_slice(line.as_bytes());
                }
                let mut body = vec![0u8; len];
                reader.read_exact(&mut body)?;
                let mut u = std::net::TcpStream::connect(&up)?;
                u.write_all(&head)?;
                u.write_all(&body)?;
                let mut answer = Vec::new();
                u.read_to_end(&mut answer)?;
                if let Some(i) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
                    keep.lock().unwrap().push(String::from_utf8_lossy(&answer[i + 4..]).into_owned());
                }
                conn.write_all(&answer)
            });
        }
    });
    (addr, answers)
}
