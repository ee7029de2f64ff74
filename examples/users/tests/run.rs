//! Runs the example end to end on a PostgreSQL the test starts (a small number of users).
//! Without PostgreSQL: `SKIPPED:` (a failure with `ENVSEAL_REQUIRE_SERVERS=1`).

use envseal_testkit::postgres::TempPostgres;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_runs_end_to_end() {
    let Some(pg) = TempPostgres::start_or_skip("the_example_runs_end_to_end") else { return };
    pg.create_database("example").unwrap();
    let mut out = Vec::new();
    envseal_example_users::run(&pg.url("example"), 150, &mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    for step in [
        "1. inserted 150 users",
        "2. e-mail lookup:",
        "1 real match(es): id [75]",
        "3. rewrap after a key rotation:",
        "complete: true",
        "5. all ",
    ] {
        assert!(text.contains(step), "missing {step:?} in:\n{text}");
    }
}
