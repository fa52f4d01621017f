//! The state of one pool while its lines are read: the [`PoolConfig`] being filled from its
//! defaults, and what the duplicate checks and error messages need (the line each key was
//! first set on, the `user` names and renamed commands seen so far).
//!
//! Invariants:
//! * A builder starts from [`PoolConfig::with_defaults`]; only [`PoolBuilder::set`] changes
//!   it, through the key table's setter for the key, after the duplicate check for
//!   [`Shape::Once`] keys.
//! * `seen` records the first line of every once-only key, under its canonical name (so an
//!   alias and its key are duplicates of each other); `validate` reads it to point errors at
//!   the line that set a key.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::keys::{Arg, PoolKey, Shape};
use super::model::{Listen, PoolConfig};
use super::values::check_pool_name;

pub(crate) struct PoolBuilder {
    pub pool: PoolConfig,
    /// Line of `pool NAME` / `NAME:` (0 for the command line).
    pub line: usize,
    /// Line of `listen`, None until set.
    pub listen: Option<usize>,
    /// Canonical key -> line of first occurrence (duplicate detection).
    pub seen: HashMap<&'static str, usize>,
    /// nutcracker only: `redis:` value and line.
    pub redis: Option<(bool, usize)>,
    /// `user` name / `rename_command` OLD and NEW (upper case) -> line (duplicate detection).
    pub user_lines: HashMap<String, usize>,
    pub rename_lines: HashMap<String, usize>,
}

impl PoolBuilder {
    pub fn new(name: &str, line: usize) -> PoolBuilder {
        PoolBuilder {
            pool: PoolConfig::with_defaults(name, Listen::Tcp(SocketAddr::from(([0, 0, 0, 0], 0)))),
            line,
            listen: None,
            seen: HashMap::new(),
            redis: None,
            user_lines: HashMap::new(),
            rename_lines: HashMap::new(),
        }
    }

    /// Open pool `name`, declared on `line`, after `pools`: the name must be valid and new.
    pub fn open(pools: &mut Vec<PoolBuilder>, name: &str, line: usize) -> Result<(), String> {
        check_pool_name(name)?;
        if let Some(p) = pools.iter().find(|p| p.pool.name == name) {
            return Err(format!(
                "duplicate pool name '{name}' (first defined on line {})",
                p.line
            ));
        }
        pools.push(PoolBuilder::new(name, line));
        Ok(())
    }

    /// Set key `k` (written as `key`) to `value`; errors without file:line.
    pub fn set(
        &mut self,
        k: &'static PoolKey,
        key: &str,
        value: &str,
        line: usize,
    ) -> Result<(), String> {
        if k.shape == Shape::Once {
            first_set(&mut self.seen, k.name, key, line)?;
        }
        (k.set)(self, &Arg { key, value, line })
    }
}

/// Record that the key `name` (written as `key`) is set on `line`; the second time it is a
/// "duplicate key" error naming the first line (none for the command line, line 0).
pub(crate) fn first_set(
    seen: &mut HashMap<&'static str, usize>,
    name: &'static str,
    key: &str,
    line: usize,
) -> Result<(), String> {
    match seen.insert(name, line) {
        None => Ok(()),
        Some(0) => Err(format!("duplicate key '{key}'")),
        Some(first) => Err(format!("duplicate key '{key}' (first set on line {first})")),
    }
}
