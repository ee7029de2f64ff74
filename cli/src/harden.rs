//! Process hardening while plaintext may be in memory: no core dumps.
//!
//! On Linux, `PR_SET_DUMPABLE 0` makes the process non-dumpable (no core file, and other
//! processes of the same user can no longer ptrace it or read its `/proc/PID/mem`), and
//! `RLIMIT_CORE 0` stops core files for it and for the children it starts (`envseal run`,
//! `envseal edit`; `PR_SET_DUMPABLE` itself is reset by `exec`). Both are set at start-up, before
//! any secret is read. `ENVSEAL_ALLOW_CORE_DUMPS=1` leaves them alone, for debugging envseal itself.

/// Turns core dumps off for this process (and, through the resource limit, its children).
/// Returns what could not be done (never fatal: the caller warns).
pub fn disable_core_dumps() -> Result<(), String> {
    if std::env::var_os("ENVSEAL_ALLOW_CORE_DUMPS").is_some_and(|v| v == "1") {
        return Ok(());
    }
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{DumpableBehavior, Resource, Rlimit, set_dumpable_behavior, setrlimit};
        let mut failed = Vec::new();
        if let Err(e) = setrlimit(Resource::Core, Rlimit { current: Some(0), maximum: Some(0) }) {
            failed.push(format!("RLIMIT_CORE: {e}"));
        }
        if let Err(e) = set_dumpable_behavior(DumpableBehavior::NotDumpable) {
            failed.push(format!("PR_SET_DUMPABLE: {e}"));
        }
        if failed.is_empty() { Ok(()) } else { Err(failed.join("; ")) }
    }
    #[cfg(not(target_os = "linux"))]
    {
        Ok(())
    }
}
