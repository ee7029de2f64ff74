//! See README.md: `cargo run --release -p envseal-example-users [-- --users N]`.

#![forbid(unsafe_code)]

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let mut users = 2000;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next().and_then(|n| n.parse().ok())) {
            ("--users", Some(n)) => users = n,
            _ => {
                eprintln!("usage: envseal-example-users [--users N]   (DATABASE_URL selects an existing PostgreSQL)");
                return ExitCode::from(2);
            }
        }
    }
    let url = std::env::var("DATABASE_URL").ok();
    // Without DATABASE_URL: a throwaway server, stopped when `_pg` drops.
    let (_pg, url) = match url {
        Some(u) => (None, u),
        None => match envseal_testkit::postgres::TempPostgres::start() {
            Ok(pg) => {
                if let Err(e) = pg.create_database("users_example") {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
                let u = pg.url("users_example");
                (Some(pg), u)
            }
            Err(e) => {
                eprintln!(
                    "error: cannot start PostgreSQL ({e});\nhint: `sudo apt-get install -y postgresql`, or set DATABASE_URL"
                );
                return ExitCode::FAILURE;
            }
        },
    };
    match envseal_example_users::run(&url, users, &mut std::io::stdout()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
