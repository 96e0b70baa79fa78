//! `Db` on both backends: the same statements, values, transactions and
//! errors; and the PostgreSQL migration runner.

use cts_db::{migrate, Arg, Db, DbError, PgMigration, PgSchema, PgSettings, Pool, Sql, Val};
use cts_sqlite::{Migrations, M};
use cts_testpg::TestPg;

/// The same table in each dialect (a store's migrations are per backend).
const SQLITE_TABLE: &str = "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, data BLOB,
    flag INTEGER NOT NULL DEFAULT 0, small INTEGER);";
const PG_SCHEMA: PgSchema = PgSchema {
    ledger: "test_migrations",
    migrations: &[PgMigration {
        version: 1,
        name: "t",
        sql: "CREATE TABLE t (id bigint PRIMARY KEY, name text, data bytea,
              flag boolean NOT NULL DEFAULT false, small integer)",
    }],
};

/// Where a test's database lives.
enum Place {
    Sqlite(tempfile::TempDir),
    Postgres(TestPg),
}

impl Place {
    fn open(&self) -> Db {
        match self {
            Place::Sqlite(dir) => {
                let migrations = Migrations::new(vec![M::up(SQLITE_TABLE)]);
                Db::sqlite(dir.path(), "t.db", &migrations).unwrap()
            }
            Place::Postgres(pg) => Db::postgres(pool(&pg.url()), &PG_SCHEMA, true).unwrap(),
        }
    }
}

fn pool(url: &str) -> Pool {
    PgSettings::new(url.parse().unwrap()).connect().unwrap()
}

/// Runs the test `$name(&Db)` on SQLite and on PostgreSQL, as two tests.
macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[test]
            fn sqlite() {
                let place = super::Place::Sqlite(tempfile::tempdir().unwrap());
                super::$name(&place.open());
            }

            #[test]
            fn postgres() {
                let place = super::Place::Postgres(cts_testpg::TestPg::start());
                super::$name(&place.open());
            }
        }
    };
}

both!(values_and_parameters_are_the_same_on_both);
fn values_and_parameters_are_the_same_on_both(db: &Db) {
    let insert = "INSERT INTO t (id, name, data, flag, small) VALUES ($1, $2, $3, $4, $5)";
    db.transaction(|sql| {
        let blob: &[u8] = &[0, 1, 255];
        sql.exec(
            insert,
            &[1.into(), "one".into(), blob.into(), true.into(), 7.into()],
        )?;
        sql.exec(
            insert,
            &[
                2.into(),
                None::<&str>.into(),
                Arg::Null,
                false.into(),
                Arg::Null,
            ],
        )?;
        Ok::<_, DbError>(())
    })
    .unwrap();
    let rows = db
        .read(|sql| sql.query("SELECT id, name, data, flag, small FROM t ORDER BY id", &[]))
        .unwrap();
    assert_eq!(
        rows,
        [
            vec![
                Val::Int(1),
                Val::Text("one".into()),
                Val::Bytes(vec![0, 1, 255]),
                Val::Int(1),
                Val::Int(7)
            ],
            vec![Val::Int(2), Val::Null, Val::Null, Val::Int(0), Val::Null],
        ]
    );
    assert!(rows[0][3].bool().unwrap() && !rows[1][3].bool().unwrap());
    assert_eq!(rows[1][1].opt_text().unwrap(), None);

    // A parameter used twice, and parameters first used out of order.
    let reused = "SELECT id FROM t WHERE id = $1 OR (id > $1 AND name = $2) ORDER BY id";
    let ids = |args: &[Arg<'_>]| -> Vec<i64> {
        db.read(|sql| sql.query(reused, args))
            .unwrap()
            .iter()
            .map(|r| r[0].int().unwrap())
            .collect()
    };
    assert_eq!(ids(&[1.into(), "x".into()]), [1]);
    let changed = db
        .read(|sql| {
            sql.exec(
                "UPDATE t SET name = $2 WHERE id = $1",
                &[2.into(), "x".into()],
            )
        })
        .unwrap();
    assert_eq!(changed, 1);
    assert_eq!(ids(&[0.into(), "x".into()]), [2]);
    let none = db
        .read(|sql| sql.query_opt("SELECT name FROM t WHERE id = $1", &[3.into()]))
        .unwrap();
    assert_eq!(none, None);

    // An integer too wide for its column is refused, never truncated.
    let wide = db.read(|sql| {
        sql.exec(
            "UPDATE t SET small = $1 WHERE id = 1",
            &[Arg::Int(i64::from(i32::MAX) + 1)],
        )
    });
    if db.is_postgres() {
        assert!(wide.is_err(), "{wide:?}");
    }
}

both!(a_transaction_commits_all_or_nothing);
fn a_transaction_commits_all_or_nothing(db: &Db) {
    let insert = |sql: &dyn Sql, id: i64| {
        sql.exec("INSERT INTO t (id, name) VALUES ($1, 'x')", &[id.into()])
    };
    let failed: Result<(), DbError> = db.transaction(|sql| {
        insert(sql, 1)?;
        insert(sql, 1)?; // the same key: the whole transaction fails
        Ok(())
    });
    assert!(failed.unwrap_err().is_unique_violation());
    let count = |db: &Db| {
        db.read(|sql| sql.query_opt("SELECT count(*) FROM t", &[]))
            .unwrap()
            .unwrap()[0]
            .int()
            .unwrap()
    };
    assert_eq!(count(db), 0);
    let refused: Result<(), DbError> = db.transaction(|sql| {
        insert(sql, 3)?;
        Err(DbError::Setting("the caller's own failure".into()))
    });
    assert!(refused.is_err());
    assert_eq!(count(db), 0);
    db.transaction(|sql| {
        insert(sql, 1)?;
        insert(sql, 2)
    })
    .unwrap();
    assert_eq!(count(db), 2);
    let duplicate = db.read(|sql| insert(sql, 2)).unwrap_err();
    assert!(duplicate.is_unique_violation(), "{duplicate}");
    let other = db
        .read(|sql| sql.exec("INSERT INTO nowhere (id) VALUES (1)", &[]))
        .unwrap_err();
    assert!(!other.is_unique_violation(), "{other}");
    // A missing parameter is an error, not a NULL.
    let missing = db.read(|sql| sql.query("SELECT id FROM t WHERE id = $2", &[1.into()]));
    assert!(missing.is_err());
}

fn versions(schema: &PgSchema) -> Vec<i32> {
    schema.migrations.iter().map(|m| m.version).collect()
}

const TWO: &[PgMigration] = &[
    PgMigration {
        version: 1,
        name: "a",
        sql: "CREATE TABLE a (x bigint); CREATE TABLE a2 (y bigint)",
    },
    PgMigration {
        version: 2,
        name: "b",
        sql: "CREATE TABLE b (x bigint)",
    },
];

#[test]
fn migrations_run_once_per_schema_and_a_start_without_them_refuses() {
    let pg = TestPg::start();
    let url = pg.fresh_database();
    let two = PgSchema {
        ledger: "two_migrations",
        migrations: TWO,
    };
    let e = Db::postgres(pool(&url), &two, false).unwrap_err();
    assert!(matches!(e, DbError::SchemaBehind { .. }), "{e}");
    assert!(e.to_string().contains("ctsd migrate"), "{e}");

    let mut client = pool(&url).get().unwrap();
    assert_eq!(migrate(&mut client, &two).unwrap(), versions(&two));
    assert!(migrate(&mut client, &two).unwrap().is_empty());
    // Another schema in the same database has a ledger of its own.
    assert_eq!(migrate(&mut client, &PG_SCHEMA).unwrap(), [1]);
    Db::postgres(pool(&url), &two, false).expect("a current schema");

    // A build that knows only the first migration refuses the database.
    let older = PgSchema {
        ledger: "two_migrations",
        migrations: &TWO[..1],
    };
    let e = Db::postgres(pool(&url), &older, true).unwrap_err();
    assert!(matches!(e, DbError::SchemaAhead { applied: 2, .. }), "{e}");

    // A list with a gap is a mistake of the code, refused before anything.
    let gap = PgSchema {
        ledger: "gap_migrations",
        migrations: &TWO[1..],
    };
    let e = migrate(&mut client, &gap).unwrap_err();
    assert!(matches!(e, DbError::BadSchema { .. }), "{e}");

    // Nodes starting together on a new database: one applies, none fails.
    let url = pg.fresh_database();
    let starts: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                let two = PgSchema {
                    ledger: "two_migrations",
                    migrations: TWO,
                };
                migrate(&mut pool(&url).get().unwrap(), &two).unwrap().len()
            })
        })
        .collect();
    let applied: usize = starts.into_iter().map(|s| s.join().unwrap()).sum();
    assert_eq!(applied, TWO.len());
}

/// A report is answered only after its commit is durable, whatever the
/// database's or role's defaults say; and no statement waits for LLVM to
/// compile it (PostgreSQL's JIT cost more CPU than ctsd's inserts).
#[test]
fn every_connection_commits_synchronously_and_never_compiles() {
    let pg = TestPg::start();
    let url = pg.fresh_database();
    let db = url.rsplit('/').next().unwrap().to_owned();
    pg.sql(&format!(
        "ALTER DATABASE \"{db}\" SET synchronous_commit = off; \
         ALTER DATABASE \"{db}\" SET jit = on"
    ));
    let mut client = pool(&url).get().unwrap();
    let mut show = |name: &str| -> String {
        client
            .query_one(format!("SHOW {name}").as_str(), &[])
            .unwrap()
            .get(0)
    };
    assert_eq!(show("synchronous_commit"), "on");
    assert_eq!(show("jit"), "off");
}
