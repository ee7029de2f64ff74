//! A throwaway PostgreSQL server for tests and benchmarks: `initdb` and `pg_ctl` from Debian's
//! `postgresql` package (`/usr/lib/postgresql/<version>/bin`, or `$ENVSEAL_PG_BIN`), a private
//! data directory under the temp dir, a free port on 127.0.0.1, trust authentication for the
//! user `envseal`. Stopped (`pg_ctl stop -m immediate`) and removed on drop.
//!
//! PostgreSQL refuses to run as root: when the tests run as root, the server runs as the
//! `postgres` system user (created by the Debian package) through `runuser`.
//!
//! Without PostgreSQL, [`TempPostgres::start_or_skip`] prints a loud `SKIPPED:` line and returns
//! `None`, or panics when `ENVSEAL_REQUIRE_SERVERS=1` (CI).

use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The variable that turns a missing server into a failure.
pub const REQUIRE_ENV: &str = "ENVSEAL_REQUIRE_SERVERS";
/// Overrides where `initdb` and `pg_ctl` are looked for.
pub const BIN_ENV: &str = "ENVSEAL_PG_BIN";
/// The database user (superuser, trust authentication on 127.0.0.1).
pub const USER: &str = "envseal";

/// Whether missing servers must fail the tests (`ENVSEAL_REQUIRE_SERVERS=1`).
pub fn require_servers() -> bool {
    std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1")
}

/// Reports a test that cannot run: a loud `SKIPPED:` line, or a panic when servers are
/// required.
///
/// # Panics
/// When `ENVSEAL_REQUIRE_SERVERS=1`.
pub fn skip(test: &str, why: &str) {
    if require_servers() {
        panic!("{test}: {REQUIRE_ENV}=1 but {why}");
    }
    // Straight to the process's stderr: libtest captures `eprintln!` of passing tests, which
    // would make the skip silent.
    let line = format!(
        "\n*** SKIPPED: {test}: {why}. Install it with `apt-get install -y postgresql`; set {REQUIRE_ENV}=1 to make this a failure. ***\n"
    );
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// A running PostgreSQL server, stopped and deleted on drop.
#[derive(Debug)]
pub struct TempPostgres {
    root: PathBuf,
    bin: PathBuf,
    port: u16,
    run_as: Option<&'static str>,
}

fn bin_dir() -> Result<PathBuf, String> {
    if let Ok(d) = std::env::var(BIN_ENV) {
        return Ok(PathBuf::from(d));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| "PostgreSQL is not installed (no /usr/lib/postgresql)".to_string())?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b).ok_or_else(|| "no /usr/lib/postgresql/*/bin/initdb".to_string())
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

impl TempPostgres {
    /// Starts a server with the default settings plus `settings` (`name=value` pairs passed as
    /// `-c` options, e.g. `("fsync", "off")` for tests).
    ///
    /// # Errors
    /// A description of what is missing or failed (the server log is included).
    pub fn start_with(settings: &[(&str, &str)]) -> Result<Self, String> {
        let bin = bin_dir()?;
        let run_as = if is_root() { Some("postgres") } else { None };
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let root = std::env::temp_dir().join(format!(
            "envseal-pg-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
        let pg = Self { root, bin, port: free_port()?, run_as };
        if let Some(user) = run_as {
            let out =
                Command::new("chown").arg(format!("{user}:")).arg(&pg.root).output().map_err(|e| e.to_string())?;
            if !out.status.success() {
                return Err(format!("chown {user} {}: {}", pg.root.display(), String::from_utf8_lossy(&out.stderr)));
            }
        }
        let data = pg.root.join("data");
        pg.run(
            "initdb",
            &["-D", &data.display().to_string(), "-U", USER, "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"],
        )?;
        let mut opts = format!("-p {} -k {} -c listen_addresses=127.0.0.1", pg.port, pg.root.display());
        for (k, v) in settings {
            opts.push_str(&format!(" -c {k}={v}"));
        }
        let log = pg.root.join("server.log");
        let started = pg.run(
            "pg_ctl",
            &[
                "-D",
                &data.display().to_string(),
                "-o",
                &opts,
                "-l",
                &log.display().to_string(),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        if let Err(e) = started {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(format!("{e}\nserver log:\n{log}"));
        }
        Ok(pg)
    }

    /// Starts a server tuned for tests (no fsync: the data is thrown away).
    ///
    /// # Errors
    /// As [`TempPostgres::start_with`].
    pub fn start() -> Result<Self, String> {
        Self::start_with(&[("fsync", "off"), ("synchronous_commit", "off"), ("full_page_writes", "off")])
    }

    /// [`TempPostgres::start`], or `None` after [`skip`].
    ///
    /// # Panics
    /// When the server cannot start and `ENVSEAL_REQUIRE_SERVERS=1`.
    pub fn start_or_skip(test: &str) -> Option<Self> {
        match Self::start() {
            Ok(pg) => Some(pg),
            Err(why) => {
                skip(test, &format!("PostgreSQL could not start: {why}"));
                None
            }
        }
    }

    fn command(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        match self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(exe);
                c
            }
            None => Command::new(exe),
        }
    }

    fn run(&self, tool: &str, args: &[&str]) -> Result<Output, String> {
        let out = self
            .command(tool)
            .args(args)
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("{tool}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{tool} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(out)
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory's parent (server log in `server.log`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates a database.
    ///
    /// # Errors
    /// `createdb`'s output.
    pub fn create_database(&self, name: &str) -> Result<(), String> {
        let port = self.port.to_string();
        self.run("createdb", &["-h", "127.0.0.1", "-p", &port, "-U", USER, name]).map(drop)
    }

    /// `postgres://envseal@127.0.0.1:PORT/db`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{db}", self.port)
    }

    /// Runs SQL with `psql` (for tests that check the database from outside the library).
    ///
    /// # Errors
    /// `psql`'s output.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let port = self.port.to_string();
        let out = self.run(
            "psql",
            &["-h", "127.0.0.1", "-p", &port, "-U", USER, "-d", db, "-At", "-v", "ON_ERROR_STOP=1", "-c", sql],
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        let data = self.root.join("data");
        let _ = self
            .command("pg_ctl")
            .args(["-D", &data.display().to_string(), "-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
