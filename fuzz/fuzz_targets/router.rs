//! Parse a command, then resolve + plan it against a small ring: never panics; a Forward or
//! Scan names an existing backend; a Split's groups cover every key exactly once, each group on
//! the backend its keys hash to, and `order` points back at each key.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rustproxy::hash::HashKind;
use rustproxy::resp::{self, Args, Limits};
use rustproxy::ring::{Distribution, Ring, RingNode};
use rustproxy::router::{self, Plan, Target};

fuzz_target!(|input: &[u8]| {
    // Header: [nservers/live mask, hash kind, distribution + tag choice, disabled choice].
    if input.len() < 4 {
        return;
    }
    let (h, data) = input.split_at(4);
    let nservers = 1 + (h[0] & 7) as usize; // 1..=8
    let live_mask = h[0] >> 3; // bit i set = node i ejected (for the first 5)
    let hash = HashKind::ALL[h[1] as usize % HashKind::ALL.len()];
    let dist = match h[2] & 3 {
        0 | 3 => Distribution::Ketama,
        1 => Distribution::Modula,
        _ => Distribution::Random,
    };
    let tag = match (h[2] >> 2) & 3 {
        0 => None,
        1 => Some(*b"{}"),
        2 => Some(*b"$$"),
        _ => Some(*b"::"),
    };
    let nodes: Vec<RingNode> = (0..nservers)
        .map(|i| RingNode {
            identity: format!("127.0.0.1:{}", 7000 + i).into_bytes(),
            weight: 1 + (i as u32 % 3),
            live: i >= 5 || live_mask & (1 << i) == 0,
        })
        .collect();
    let ring = Ring::build(hash, dist, &nodes);
    let disabled: Vec<String> = match h[3] & 3 {
        0 => vec![],
        1 => vec!["KEYS".into()],
        2 => vec!["MGET".into(), "CONFIG GET".into()],
        _ => vec!["del".into()],
    };
    let target = Target {
        ring: &ring,
        tag,
        nservers,
        disabled: &disabled,
        slots: None,
        hash_override: data.first().is_some_and(|b| b & 1 == 1),
    };
    let mut args = Args::default();
    let mut keys = Vec::new();
    let mut rest = data;
    let mut n_cmds = 0;
    while !rest.is_empty() && n_cmds < 64 {
        n_cmds += 1;
        let n = match resp::parse_command(rest, &Limits::default(), &mut args) {
            Ok(n) => n,
            Err(_) => break,
        };
        let frame = &rest[..n];
        rest = &rest[n..];
        if args.is_empty() {
            continue;
        }
        let spec = match router::resolve(&args, frame) {
            Ok(s) => s,
            Err(e) => {
                assert!(!e.contains(['\r', '\n']), "multi-line error: {e:?}");
                continue;
            }
        };
        match router::plan(spec, &args, frame, &target, &mut keys) {
            Plan::Local(_) | Plan::FanOut(_) => {}
            Plan::Error(e) => assert!(!e.contains(['\r', '\n']), "multi-line error: {e:?}"),
            Plan::Forward { server, argc, .. } | Plan::Blocking { server, argc, .. } => {
                assert!(server < nservers, "Forward to {server} of {nservers}");
                assert!(argc <= args.len() && argc >= 1);
            }
            Plan::Scan { server, .. } => assert!(server < nservers),
            Plan::Split {
                step,
                groups,
                order,
                ..
            } => {
                assert!(step == 1 || step == 2);
                // (Random distribution picks per call, so placement is only checked otherwise.)
                let placed = dist != Distribution::Random;
                if placed {
                    assert!(
                        groups.len() >= 2,
                        "a split over one backend should be a Forward"
                    );
                }
                let argc = args.len();
                let want: Vec<u32> = (1..argc).step_by(step).map(|i| i as u32).collect();
                let mut seen = vec![0u32; argc];
                let mut servers_seen = Vec::new();
                for (srv, idx) in &groups {
                    assert!(*srv < nservers, "group on server {srv} of {nservers}");
                    assert!(!servers_seen.contains(srv), "two groups on server {srv}");
                    servers_seen.push(*srv);
                    assert!(!idx.is_empty());
                    for &i in idx {
                        assert!(
                            (i as usize) < argc && want.contains(&i),
                            "bad key index {i}"
                        );
                        seen[i as usize] += 1;
                        let key = args.get(frame, i as usize);
                        if placed {
                            assert_eq!(target.pick(key), Some(*srv), "key on the wrong group");
                        }
                    }
                }
                for &i in &want {
                    assert_eq!(
                        seen[i as usize], 1,
                        "key at {i} covered {} times",
                        seen[i as usize]
                    );
                }
                assert_eq!(order.len(), want.len());
                for (j, &(g, p)) in order.iter().enumerate() {
                    let (_, idx) = &groups[g as usize];
                    assert_eq!(
                        idx[p as usize], want[j],
                        "order[{j}] points at the wrong key"
                    );
                }
            }
        }
    }
});
