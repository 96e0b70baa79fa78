//! `cts-testpg -- COMMAND [ARGS…]`: runs COMMAND beside a throwaway
//! PostgreSQL server ([`cts_testpg::TestPg`]: initdb into a temporary
//! directory, a free loopback port, the `postgres` user when run as root),
//! with the URL of its database `cts` in `CTS_TEST_PG_URL` (the role is a
//! superuser: COMMAND may create databases of its own). The server is
//! stopped and removed when COMMAND ends; the exit status is COMMAND's.
//! scripts/test.sh runs the compatibility suite on PostgreSQL through it.

use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match args.split_first() {
        Some((dashes, rest)) if dashes == "--" => rest,
        _ => &args[..],
    };
    let Some((program, rest)) = command.split_first() else {
        eprintln!("usage: cts-testpg -- COMMAND [ARGS...]");
        return ExitCode::from(2);
    };
    let pg = cts_testpg::TestPg::start();
    let status = Command::new(program)
        .args(rest)
        .env("CTS_TEST_PG_URL", pg.url())
        .status();
    drop(pg);
    match status {
        Ok(status) => ExitCode::from(status.code().map_or(1, |c| c as u8)),
        Err(e) => {
            eprintln!("cts-testpg: {program} does not run: {e}");
            ExitCode::from(2)
        }
    }
}
