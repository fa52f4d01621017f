//! COMMAND and its subcommands. COUNT, LIST, INFO, DOCS and COMMAND itself describe one
//! command set: backend 0's (the Redis commands it knows, with its arity, flags, key specs
//! and docs) plus the proxy's own (BACKEND, BACKENDNUM, BACKENDS, FORWARD, PROXY), which the
//! proxy puts into the backend's reply (`combine::Splice`). GETKEYS answers from the proxy's
//! table, so it agrees with how the proxy routes.
//!
//! Invariants: `COMMAND COUNT` = the number of entries of `COMMAND` = the top-level names of
//! `COMMAND LIST`, and `COMMAND INFO` answers every one of them; every answer goes through the
//! client's chain (one slot, one backend request at most).

use super::*;
use crate::combine::Splice;
use crate::commands::{flag, has, Keys, COMMANDS};

/// The proxy's own commands (top level).
fn own() -> impl Iterator<Item = &'static Spec> {
    COMMANDS
        .iter()
        .filter(|c| c.group == "proxy" && !c.name.contains(' '))
}

/// One of the proxy's own commands, by name (any case).
fn own_named(name: &[u8]) -> Option<&'static Spec> {
    own().find(|c| c.name.as_bytes().eq_ignore_ascii_case(name))
}

/// One line of what each of the proxy's commands does (COMMAND DOCS `summary`).
fn summary(name: &str) -> &'static str {
    match name {
        "BACKEND" => "Returns the name of the backend that holds each key.",
        "BACKENDNUM" => "Returns the position of the backend that holds each key.",
        "BACKENDS" => "Returns the names of the pool's backends.",
        "FORWARD" => "Sends a command verbatim to one backend.",
        _ => "Administers the proxy: reload, list, add or remove backends.",
    }
}

/// COMMAND INFO's entry for one of the proxy's commands, in Redis 7's shape.
fn info_entry(spec: &Spec, resp3: bool, out: &mut Vec<u8>) {
    resp::write_array_len(out, 10);
    resp::write_bulk(out, spec.name.to_ascii_lowercase().as_bytes());
    resp::write_int(out, i64::from(spec.arity));
    let mut flags: Vec<&[u8]> = Vec::new();
    let mut cats: Vec<&[u8]> = vec![b"@slow"];
    if has(spec, flag::WRITE) {
        flags.push(b"write");
        cats.push(b"@write");
    }
    if has(spec, flag::ADMIN) {
        flags.push(b"admin");
        cats.push(b"@admin");
        cats.push(b"@dangerous");
    }
    resp::write_set_len(out, flags.len(), resp3);
    flags.iter().for_each(|f| resp::write_simple(out, f));
    let (first, last, step) = match spec.keys {
        Keys::Range { first, last, step } => (i64::from(first), i64::from(last), i64::from(step)),
        _ => (0, 0, 0),
    };
    resp::write_int(out, first);
    resp::write_int(out, last);
    resp::write_int(out, step);
    resp::write_set_len(out, cats.len(), resp3);
    cats.iter().for_each(|c| resp::write_simple(out, c));
    // Tips, key specifications, subcommands.
    for _ in 0..3 {
        resp::write_array_len(out, 0);
    }
}

/// COMMAND DOCS's name and doc for one of the proxy's commands (a map's key and value).
fn docs_entry(spec: &Spec, resp3: bool, out: &mut Vec<u8>) {
    resp::write_bulk(out, spec.name.to_ascii_lowercase().as_bytes());
    resp::write_map_len(out, 3, resp3);
    resp::write_bulk(out, b"summary");
    resp::write_bulk(out, summary(spec.name).as_bytes());
    resp::write_bulk(out, b"since");
    resp::write_bulk(out, env!("CARGO_PKG_VERSION").as_bytes());
    resp::write_bulk(out, b"group");
    resp::write_bulk(out, b"proxy");
}

impl Proxy {
    /// COMMAND [COUNT | LIST [FILTERBY ...] | INFO [name...] | DOCS [name...] | GETKEYS ... |
    /// other subcommands]: see the module comment.
    pub(super) fn command_cmd(&mut self, k: usize, frame: &[u8], args: &Args) {
        let Some(resp3) = self.clients.get(k).map(|c| c.resp3) else {
            return;
        };
        let argc = args.len();
        let arg = |i: usize| args.get(frame, i);
        let sub = if argc > 1 {
            arg(1).to_ascii_uppercase()
        } else {
            Vec::new()
        };
        let whole = encode_args(args, frame, 0..argc);
        let splice = match (sub.as_slice(), argc) {
            (b"", 1) | (b"INFO", 2) => {
                let mut extra = Vec::new();
                own().for_each(|s| info_entry(s, resp3, &mut extra));
                Splice::Append {
                    extra,
                    n: own().count(),
                }
            }
            (b"COUNT", 2) => Splice::Add(own().count() as i64),
            (b"DOCS", 2) => {
                let mut extra = Vec::new();
                own().for_each(|s| docs_entry(s, resp3, &mut extra));
                Splice::Append {
                    extra,
                    n: own().count(),
                }
            }
            (b"LIST", 2) | (b"LIST", 5)
                if argc == 2
                    || (arg(2).eq_ignore_ascii_case(b"FILTERBY")
                        && arg(3).eq_ignore_ascii_case(b"PATTERN")) =>
            {
                let names: Vec<String> = own()
                    .map(|s| s.name.to_ascii_lowercase())
                    .filter(|n| argc == 2 || super::builtin::glob_match(arg(4), n.as_bytes()))
                    .collect();
                let mut extra = Vec::new();
                names
                    .iter()
                    .for_each(|n| resp::write_bulk(&mut extra, n.as_bytes()));
                Splice::Append {
                    extra,
                    n: names.len(),
                }
            }
            (b"INFO", _) => {
                // Per name, in order: the proxy's own entries here, the rest from backend 0.
                let mut slots = Vec::with_capacity(argc - 2);
                let mut req: Vec<&[u8]> = vec![b"COMMAND", b"INFO"];
                for i in 2..argc {
                    match own_named(arg(i)) {
                        Some(s) => {
                            let mut e = Vec::new();
                            info_entry(s, resp3, &mut e);
                            slots.push(Some(e));
                        }
                        None => {
                            slots.push(None);
                            req.push(arg(i));
                        }
                    }
                }
                if req.len() == 2 {
                    let mut out = Vec::new();
                    resp::write_array_len(&mut out, slots.len());
                    slots
                        .iter()
                        .flatten()
                        .for_each(|e| out.extend_from_slice(e));
                    return self.reply(k, &out);
                }
                let mut bytes = Vec::new();
                resp::write_command(&mut bytes, req);
                return self.send_multi(k, Combine::Splice(Splice::Fill(slots)), &[(0, bytes)]);
            }
            (b"DOCS", _) => {
                // Redis leaves unknown names out; the proxy's own docs follow the backend's.
                let mut req: Vec<&[u8]> = vec![b"COMMAND", b"DOCS"];
                let mut extra = Vec::new();
                let mut n = 0;
                for i in 2..argc {
                    match own_named(arg(i)) {
                        Some(s) => {
                            docs_entry(s, resp3, &mut extra);
                            n += 1;
                        }
                        None => req.push(arg(i)),
                    }
                }
                if req.len() == 2 {
                    // Only the proxy's own (none forwarded: `COMMAND DOCS` alone means all).
                    let mut out = Vec::new();
                    resp::write_map_len(&mut out, n, resp3);
                    out.extend_from_slice(&extra);
                    return self.reply(k, &out);
                }
                let mut bytes = Vec::new();
                resp::write_command(&mut bytes, req);
                return self.send_multi(
                    k,
                    Combine::Splice(Splice::Append { extra, n }),
                    &[(0, bytes)],
                );
            }
            (b"GETKEYS", _) if argc > 3 => {
                let mut out = Vec::new();
                self.command_getkeys(args, frame, &mut out);
                return self.reply(k, &out);
            }
            // HELP, GETKEYSANDFLAGS, errors: the backend's answer as it is.
            _ => return self.forward(k, 0, &whole),
        };
        self.send_multi(k, Combine::Splice(splice), &[(0, whole)]);
    }

    /// COMMAND GETKEYS cmd args...: the keys the proxy routes by, from its own table.
    fn command_getkeys(&mut self, args: &Args, frame: &[u8], out: &mut Vec<u8>) {
        let argc = args.len();
        let Some(spec) = crate::commands::lookup(args.get(frame, 2)) else {
            return reply_error(out, "ERR Invalid command specified");
        };
        let spec = if spec.class == crate::commands::Class::Container && argc > 3 {
            match crate::commands::lookup_sub(spec, args.get(frame, 3)) {
                Some(s) => s,
                None => return reply_error(out, "ERR Invalid command specified"),
            }
        } else {
            spec
        };
        // Redis's order of checks (`getKeysSubcommandImpl`): no keys at all, arity, then the
        // keys themselves; EVAL/FCALL and their variants (`no-mandatory-keys`) may have none.
        if spec.keys == crate::commands::Keys::None {
            return reply_error(out, "ERR The command has no key arguments");
        }
        if !crate::commands::arity_ok(spec, argc - 2) {
            return reply_error(out, "ERR Invalid number of arguments specified for command");
        }
        let optional = matches!(
            spec.name,
            "EVAL" | "EVALSHA" | "EVAL_RO" | "EVALSHA_RO" | "FCALL" | "FCALL_RO"
        );
        let mut keys = std::mem::take(&mut self.keys);
        match crate::commands::key_positions(spec, argc - 2, &|i| args.get(frame, i + 2), &mut keys)
        {
            Ok(()) if !keys.is_empty() => {
                resp::write_array_len(out, keys.len());
                for &i in &keys {
                    resp::write_bulk(out, args.get(frame, i + 2));
                }
            }
            _ if optional => resp::write_array_len(out, 0),
            _ => reply_error(out, "ERR Invalid arguments specified for command"),
        }
        self.keys = keys;
    }
}
