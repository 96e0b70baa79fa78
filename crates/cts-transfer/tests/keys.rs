//! The digest signing keys on SQLite and on PostgreSQL: one current key
//! whatever nodes do at once, private halves sealed under the secret key,
//! a wrong or missing secret key refused at open.

use std::sync::{Arc, Barrier};

use cts_db::SecretKey;
use cts_db::{Db, PgSettings};
use cts_testpg::TestPg;
use cts_transfer::{rotate_digest_key, Keys, StoredKey, PG_SCHEMA, SECRET_PURPOSE};

const SECRET: [u8; 32] = [42; 32];

fn pg_db(pg: &TestPg) -> Db {
    let mut settings = PgSettings::new(pg.url().parse().unwrap());
    settings.pool_size = 4;
    Db::postgres(settings.connect().unwrap(), &PG_SCHEMA, true).unwrap()
}

/// A node's keys on PostgreSQL, sealed under `secret`.
fn pg_keys(pg: &TestPg, secret: [u8; 32]) -> Keys {
    Keys::on(pg_db(pg), Some(SecretKey::derive(&secret, SECRET_PURPOSE))).unwrap()
}

fn current(keys: &Keys) -> Vec<StoredKey> {
    let all = keys.all().unwrap();
    all.into_iter().filter(|k| k.valid_to.is_none()).collect()
}

/// The same steps on either backend: the first key, rotations, reopening.
fn rotations_keep_one_current_key(open: &dyn Fn() -> Keys) {
    let keys = open();
    assert!(keys.all().unwrap().is_empty());
    let first = rotate_digest_key(&keys, 100).unwrap();
    let second = rotate_digest_key(&keys, 200).unwrap();
    let all = open().all().unwrap();
    assert_eq!(
        all.iter()
            .map(|k| k.fingerprint.as_str())
            .collect::<Vec<_>>(),
        [first.as_str(), second.as_str()]
    );
    assert_eq!(all[0].valid_to, Some(200));
    assert_eq!(current(&keys)[0].fingerprint, second);
    assert!(all[1]
        .private_pem
        .starts_with("-----BEGIN PRIVATE KEY-----"));
}

#[test]
fn sqlite_rotations_keep_one_current_key() {
    let dir = tempfile::tempdir().unwrap();
    rotations_keep_one_current_key(&|| Keys::open(dir.path(), None).unwrap());
}

#[test]
fn postgres_rotations_keep_one_current_key_sealed() {
    let pg = TestPg::start();
    rotations_keep_one_current_key(&|| pg_keys(&pg, SECRET));
    // At rest only sealed halves.
    let db = pg_db(&pg);
    let stored = db
        .read(|c| c.query("SELECT private_pem FROM signing_keys", &[]))
        .unwrap();
    assert_eq!(stored.len(), 2);
    for row in stored {
        let text = row[0].text().unwrap();
        assert!(
            text.starts_with("aes256gcm:") && !text.contains("PRIVATE"),
            "{text}"
        );
    }
}

#[test]
fn postgres_refuses_a_missing_or_other_secret_key() {
    let pg = TestPg::start();
    rotate_digest_key(&pg_keys(&pg, SECRET), 100).unwrap();
    let missing = Keys::on(pg_db(&pg), None).err().unwrap().to_string();
    assert!(missing.contains("store.secret_key"), "{missing}");
    let other = Keys::on(
        pg_db(&pg),
        Some(SecretKey::derive(&[1; 32], SECRET_PURPOSE)),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        other.contains("another secret key") && other.contains("store.secret_key"),
        "{other}"
    );
    assert_eq!(pg_keys(&pg, SECRET).all().unwrap().len(), 1);
}

/// An embedded node that sets a secret key seals its new keys and keeps
/// reading its old ones; without the key again, it refuses.
#[test]
fn sqlite_with_a_secret_key_seals_new_keys_and_reads_old_ones() {
    let dir = tempfile::tempdir().unwrap();
    let old = rotate_digest_key(&Keys::open(dir.path(), None).unwrap(), 100).unwrap();
    let keys = Keys::open(dir.path(), Some(SecretKey::derive(&SECRET, SECRET_PURPOSE))).unwrap();
    let new = rotate_digest_key(&keys, 200).unwrap();
    let all = keys.all().unwrap();
    assert_eq!(
        (all[0].fingerprint.as_str(), all[1].fingerprint.as_str()),
        (old.as_str(), new.as_str())
    );
    assert!(all[1].private_pem.starts_with("-----BEGIN"));
    let e = Keys::open(dir.path(), None).err().unwrap().to_string();
    assert!(e.contains("store.secret_key"), "{e}");
}

/// Nodes rotating at once, and nodes starting together on an empty
/// database, leave exactly one current key.
#[test]
fn postgres_nodes_racing_leave_one_current_key() {
    let pg = TestPg::start();
    let nodes: Vec<Arc<Keys>> = (0..3).map(|_| Arc::new(pg_keys(&pg, SECRET))).collect();
    let at_once = |f: fn(&Keys, i64)| {
        let barrier = Arc::new(Barrier::new(nodes.len()));
        let threads: Vec<_> = nodes
            .iter()
            .map(|k| {
                let (k, barrier) = (Arc::clone(k), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    barrier.wait();
                    f(&k, 100);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    };
    at_once(|k, now| {
        let key = new_key(now);
        k.add_first(&key).unwrap();
    });
    assert_eq!(nodes[0].all().unwrap().len(), 1, "one first key");
    for _ in 0..3 {
        at_once(|k, now| {
            rotate_digest_key(k, now).unwrap();
        });
        assert_eq!(current(&nodes[1]).len(), 1);
    }
    assert_eq!(nodes[2].all().unwrap().len(), 1 + 3 * 3);
}

/// A key as the transfer makes one (the public half is not checked here).
fn new_key(now: i64) -> StoredKey {
    let key = cts_archive::SigningKey::generate().unwrap();
    StoredKey {
        fingerprint: key.fingerprint().to_string(),
        private_pem: key.to_pkcs8_pem(),
        public_pem: key.verifying_key().to_pem(),
        valid_from: now,
        valid_to: None,
    }
}
