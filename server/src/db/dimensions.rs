//! The dimension tables: each GPU (`gpus`: node, index, UUID, model) and each serving replica
//! (`serving_replicas`: deployment, replica, node, engine) is stored once under a compact integer key, and the
//! sample tables carry the key. Ingest resolves keys in memory: the cache is filled from the table on first use
//! (so it survives a restart by reloading), a new identity costs one insert and one select before the group's
//! transaction, and the COPY encoder only looks keys up, with borrowed strings (no allocation per row).

use std::hash::Hash;
use std::sync::{Mutex, MutexGuard};

use gpu_agent::protocol::{GpuSample, ServingSample};
use hashbrown::{Equivalent, HashMap};
use sqlx::postgres::PgRow;
use sqlx::{FromRow as _, PgPool, Postgres};

/// Identities one cache holds at most; past it, it starts over between groups (the table keeps them all). A
/// fleet has a few GPUs and replicas per node; only churning identities could fill it.
const MAX_CACHED: usize = 500_000;

/// One dimension's identities and their keys, in memory.
#[derive(Debug)]
pub struct KeyCache<K> {
    inner: Mutex<Loaded<K>>,
}

/// The cached identities, and whether the table was read once.
#[derive(Debug)]
pub struct Loaded<K> {
    loaded: bool,
    keys: HashMap<K, i32>,
}

impl<K> Default for KeyCache<K> {
    fn default() -> Self {
        Self { inner: Mutex::new(Loaded { loaded: false, keys: HashMap::new() }) }
    }
}

impl<K: Hash + Eq> Loaded<K> {
    /// The key of an identity, looked up by a borrowed form of it.
    pub fn get<Q: Hash + Equivalent<K> + ?Sized>(&self, q: &Q) -> Option<i32> {
        self.keys.get(q).copied()
    }
}

impl<K: Hash + Eq> KeyCache<K> {
    /// The cache, locked (for encoding a whole group with one lock).
    pub fn lock(&self) -> MutexGuard<'_, Loaded<K>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the table must be read first; starts over when the cache is full.
    fn needs_load(&self) -> bool {
        let mut c = self.lock();
        if c.keys.len() >= MAX_CACHED {
            c.keys.clear();
        }
        !c.loaded
    }

    fn remember(&self, rows: impl IntoIterator<Item = (K, i32)>, loaded: bool) {
        let mut c = self.lock();
        c.keys.extend(rows);
        c.loaded |= loaded;
    }

    /// The identities of `wanted` not cached yet, each once.
    fn missing<Q: Hash + Equivalent<K> + Ord>(&self, wanted: impl Iterator<Item = Q>) -> Vec<Q> {
        let c = self.lock();
        let mut v: Vec<Q> = wanted.filter(|q| c.get(q).is_none()).collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// A GPU's identity: node, index, UUID, model.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GpuIdent(pub String, pub i32, pub String, pub String);

/// A borrowed [`GpuIdent`] (hashes the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GpuRef<'a>(pub &'a str, pub i32, pub &'a str, pub &'a str);

impl Equivalent<GpuIdent> for GpuRef<'_> {
    fn equivalent(&self, k: &GpuIdent) -> bool {
        self.1 == k.1 && self.0 == k.0 && self.2 == k.2 && self.3 == k.3
    }
}

impl<'a> GpuRef<'a> {
    /// The identity of `sample`, reported by `node`.
    pub fn of(node: &'a str, sample: &'a GpuSample) -> Self {
        GpuRef(node, i32::try_from(sample.gpu_index).unwrap_or(i32::MAX), &sample.uuid, &sample.model)
    }
}

/// A serving replica's identity: deployment, replica, node, engine.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReplicaIdent(pub String, pub String, pub String, pub String);

/// A borrowed [`ReplicaIdent`] (hashes the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReplicaRef<'a>(pub &'a str, pub &'a str, pub &'a str, pub &'a str);

impl Equivalent<ReplicaIdent> for ReplicaRef<'_> {
    fn equivalent(&self, k: &ReplicaIdent) -> bool {
        self.1 == k.1 && self.0 == k.0 && self.2 == k.2 && self.3 == k.3
    }
}

impl<'a> ReplicaRef<'a> {
    /// The identity of `sample`, reported by `node`.
    pub fn of(node: &'a str, sample: &'a ServingSample) -> Self {
        ReplicaRef(&sample.deployment, &sample.replica, node, &sample.engine)
    }
}

/// GPU keys.
pub type GpuKeys = KeyCache<GpuIdent>;
/// Serving replica keys.
pub type ReplicaKeys = KeyCache<ReplicaIdent>;

/// Both dimensions, shared by the ingest writers.
#[derive(Debug, Default)]
pub struct Dimensions {
    /// `gpus`.
    pub gpus: GpuKeys,
    /// `serving_replicas`.
    pub replicas: ReplicaKeys,
}

/// A statement whose parameters are bound.
pub type Bound<'q> = sqlx::query::Query<'q, Postgres, <Postgres as sqlx::Database>::Arguments>;

/// What differs between the dimension tables: their statements and their four identity columns.
pub trait Dimension: Hash + Eq + Sized {
    /// A borrowed identity (hashes the same as the owned one).
    type Ref<'a>: Hash + Equivalent<Self> + Ord + Copy;
    /// A row of `LOAD` and `FIND`: the key, then the four identity columns.
    type Row: for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin;
    /// Every identity (`$1`: how many at most), newest first.
    const LOAD: &'static str;
    /// Inserts the identities bound by [`Dimension::bind`], skipping the known ones.
    const INSERT: &'static str;
    /// The rows of the identities bound by [`Dimension::bind`].
    const FIND: &'static str;
    /// The identity and key of a row.
    fn from_row(row: Self::Row) -> (Self, i32);
    /// Binds `wanted` as four column arrays (`$1` to `$4`).
    fn bind<'q>(q: Bound<'q>, wanted: &[Self::Ref<'_>]) -> Bound<'q>;
}

impl Dimension for GpuIdent {
    type Ref<'a> = GpuRef<'a>;
    type Row = (i32, String, i32, String, String);
    const LOAD: &'static str =
        "SELECT gpu_key, node_id, gpu_index, uuid, model FROM gpus ORDER BY gpu_key DESC LIMIT $1";
    const INSERT: &'static str = "INSERT INTO gpus (node_id, gpu_index, uuid, model) \
         SELECT * FROM UNNEST($1::text[], $2::int[], $3::text[], $4::text[]) ON CONFLICT DO NOTHING";
    const FIND: &'static str = "SELECT g.gpu_key, g.node_id, g.gpu_index, g.uuid, g.model FROM gpus g \
         JOIN UNNEST($1::text[], $2::int[], $3::text[], $4::text[]) AS w(n, i, u, m) \
           ON g.node_id = w.n AND g.gpu_index = w.i AND g.uuid = w.u AND g.model = w.m";

    fn from_row((key, node, index, uuid, model): Self::Row) -> (Self, i32) {
        (GpuIdent(node, index, uuid, model), key)
    }

    fn bind<'q>(q: Bound<'q>, wanted: &[GpuRef<'_>]) -> Bound<'q> {
        q.bind(wanted.iter().map(|r| r.0.to_owned()).collect::<Vec<_>>())
            .bind(wanted.iter().map(|r| r.1).collect::<Vec<_>>())
            .bind(wanted.iter().map(|r| r.2.to_owned()).collect::<Vec<_>>())
            .bind(wanted.iter().map(|r| r.3.to_owned()).collect::<Vec<_>>())
    }
}

impl Dimension for ReplicaIdent {
    type Ref<'a> = ReplicaRef<'a>;
    type Row = (i32, String, String, String, String);
    const LOAD: &'static str = "SELECT replica_key, deployment, replica, node_id, engine FROM serving_replicas \
         ORDER BY replica_key DESC LIMIT $1";
    const INSERT: &'static str = "INSERT INTO serving_replicas (deployment, replica, node_id, engine) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[]) ON CONFLICT DO NOTHING";
    const FIND: &'static str = "SELECT s.replica_key, s.deployment, s.replica, s.node_id, s.engine \
         FROM serving_replicas s JOIN UNNEST($1::text[], $2::text[], $3::text[], $4::text[]) AS w(d, r, n, e) \
           ON s.deployment = w.d AND s.replica = w.r AND s.node_id = w.n AND s.engine = w.e";

    fn from_row((key, deployment, replica, node, engine): Self::Row) -> (Self, i32) {
        (ReplicaIdent(deployment, replica, node, engine), key)
    }

    fn bind<'q>(q: Bound<'q>, wanted: &[ReplicaRef<'_>]) -> Bound<'q> {
        q.bind(wanted.iter().map(|r| r.0.to_owned()).collect::<Vec<_>>())
            .bind(wanted.iter().map(|r| r.1.to_owned()).collect::<Vec<_>>())
            .bind(wanted.iter().map(|r| r.2.to_owned()).collect::<Vec<_>>())
            .bind(wanted.iter().map(|r| r.3.to_owned()).collect::<Vec<_>>())
    }
}

impl<K: Dimension> KeyCache<K> {
    /// Makes sure every identity of `wanted` has a cached key, creating the missing ones in the table.
    pub async fn resolve(&self, pool: &PgPool, wanted: &[K::Ref<'_>]) -> Result<(), sqlx::Error> {
        if self.needs_load() {
            let all: Vec<K::Row> = sqlx::query_as(K::LOAD).bind(MAX_CACHED as i64).fetch_all(pool).await?;
            self.remember(all.into_iter().map(K::from_row), true);
        }
        let missing = self.missing(wanted.iter().copied());
        if missing.is_empty() {
            return Ok(());
        }
        K::bind(sqlx::query(K::INSERT), &missing).execute(pool).await?;
        // A second statement: its snapshot sees identities another writer committed meanwhile.
        let rows = K::bind(sqlx::query(K::FIND), &missing).fetch_all(pool).await?;
        let found = rows.iter().map(K::Row::from_row).collect::<Result<Vec<_>, _>>()?;
        if found.len() < missing.len() {
            // Never write a row under an unknown key: fail the group (the agents retry).
            return Err(sqlx::Error::RowNotFound);
        }
        self.remember(found.into_iter().map(K::from_row), false);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_borrowed_identity_finds_its_owned_key() {
        let c = GpuKeys::default();
        c.remember([(GpuIdent("n".into(), 3, "GPU-1".into(), "H100".into()), 7)], true);
        assert_eq!(c.lock().get(&GpuRef("n", 3, "GPU-1", "H100")), Some(7));
        assert_eq!(c.lock().get(&GpuRef("n", 3, "GPU-2", "H100")), None, "a swapped GPU is a new identity");
        let r = ReplicaKeys::default();
        r.remember([(ReplicaIdent("ml/a".into(), "r1".into(), "n".into(), "vllm".into()), 2)], true);
        assert_eq!(r.lock().get(&ReplicaRef("ml/a", "r1", "n", "vllm")), Some(2));
        assert_eq!(
            c.missing(
                [GpuRef("n", 3, "GPU-1", "H100"), GpuRef("n", 4, "x", "y"), GpuRef("n", 4, "x", "y")].into_iter()
            )
            .len(),
            1
        );
    }
}
