//! Lexing shared by both file formats: comments, quoted strings, multi-word values and
//! YAML's `key: value` split.  Nothing here knows a key name.
//!
//! Invariants:
//! * A `#` starts a comment only at the start of a line or after whitespace, and never
//!   inside a quoted string; a quote opens a string only at the start of a token, so
//!   apostrophes inside words (`bob's`) are plain characters.
//! * [`quote`] and [`parse_quoted`] are inverses: `parse_quoted(&quote(s)) == (s, "")` for
//!   every string (the native renderer relies on it for the round trip).

/// Everything before a `#` that starts the line or follows whitespace,
/// outside quoted strings (a quote opens one only at the start of a token).
pub(super) fn strip_comment(line: &str) -> &str {
    let b = line.as_bytes();
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match quote {
            Some(b'"') if c == b'\\' => i += 1,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            // A quote only opens a quoted string at the start of a token.
            None if (c == b'"' || c == b'\'')
                && (i == 0 || matches!(b[i - 1], b' ' | b'\t' | b'[' | b',')) =>
            {
                quote = Some(c)
            }
            None if c == b'#' && (i == 0 || b[i - 1] == b' ' || b[i - 1] == b'\t') => {
                return &line[..i]
            }
            None => {}
        }
        i += 1;
    }
    line
}

/// Parse a quoted value starting at `s[0]` (`"` with `\"`/`\\` escapes, or
/// `'` with `''`); returns the value and the remainder after the closing quote.
pub(super) fn parse_quoted(s: &str) -> Result<(String, &str), String> {
    let q = s.as_bytes()[0] as char;
    let mut out = String::new();
    let mut chars = s[1..].char_indices();
    while let Some((i, c)) = chars.next() {
        if c == q {
            if q == '\'' && s[1 + i + 1..].starts_with('\'') {
                out.push('\'');
                chars.next();
                continue;
            }
            return Ok((out, &s[1 + i + 1..]));
        }
        if q == '"' && c == '\\' {
            match chars.next() {
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                Some((_, e @ ('"' | '\\' | '/'))) => out.push(e),
                Some((_, e)) => return Err(format!("unknown escape '\\{e}' in quoted string")),
                None => break,
            }
            continue;
        }
        out.push(c);
    }
    Err(format!("unterminated {q}-quoted string"))
}

/// A value that may be one quoted string (then nothing may follow it), else taken as is.
pub(super) fn unquote(v: &str) -> Result<String, String> {
    if v.starts_with('"') || v.starts_with('\'') {
        let (s, tail) = parse_quoted(v)?;
        if !tail.trim().is_empty() {
            return Err(format!("unexpected '{}' after quoted value", tail.trim()));
        }
        Ok(s)
    } else {
        Ok(v.to_string())
    }
}

/// Split a multi-word value on whitespace; a word that starts with a quote is a quoted string
/// (as in [`parse_quoted`], so `""` is an empty word).  A value that is one quoted string of
/// several words (`"alice pw readonly"`, YAML style) is split again.
pub(super) fn split_words(v: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut rest = v.trim_start();
    while !rest.is_empty() {
        if rest.starts_with('"') || rest.starts_with('\'') {
            let (w, tail) = parse_quoted(rest)?;
            if !tail.is_empty() && !tail.starts_with(char::is_whitespace) {
                return Err(format!("unexpected '{}' after quoted word", tail.trim()));
            }
            out.push(w);
            rest = tail.trim_start();
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            out.push(rest[..end].to_string());
            rest = rest[end..].trim_start();
        }
    }
    if out.len() == 1
        && out[0].contains(char::is_whitespace)
        && v.trim_start().starts_with(['"', '\''])
    {
        return split_words(&out[0].clone());
    }
    Ok(out)
}

/// YAML `key: value` (value raw, maybe quoted, maybe empty).
pub(super) fn split_yaml_key(body: &str) -> Result<(String, String), String> {
    let colon = body
        .char_indices()
        .find(|&(i, c)| c == ':' && body[i + 1..].chars().next().is_none_or(|n| n == ' '))
        .map(|(i, _)| i)
        .ok_or_else(|| format!("expected 'key: value', found '{body}'"))?;
    let key = unquote(body[..colon].trim())?;
    if key.is_empty() {
        return Err(format!("missing key in '{body}'"));
    }
    Ok((key, body[colon + 1..].trim().to_string()))
}

/// `s` as a `"..."` string that [`parse_quoted`] reads back as `s`.
pub(super) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_nutcracker;
    use crate::config::testutil::native;
    use std::path::PathBuf;

    #[test]
    fn comments_and_apostrophes() {
        let c = native(
            "log_file /tmp/bob's.log # comment\npool p\nlisten 127.0.0.1:6380\n\
             redis_auth a'b#c # not part of it\nserver 127.0.0.1:7001 # first\n",
        )
        .unwrap();
        assert_eq!(c.log_file, Some(PathBuf::from("/tmp/bob's.log")));
        assert_eq!(c.pools[0].redis_auth.as_deref(), Some("a'b#c"));
        let y = parse_nutcracker(
            "a: # pool\n  listen: 127.0.0.1:6380 # here\n  redis: true\n  redis_auth: it's # c\n\
             \n  servers: ['127.0.0.1:7001:1 x#y', 127.0.0.1:7002:1] # list\n",
            "t.yml",
        )
        .unwrap();
        assert_eq!(y.pools[0].redis_auth.as_deref(), Some("it's"));
        assert_eq!(y.pools[0].servers[0].display_name(), "x#y");
    }

    #[test]
    fn quote_reads_back() {
        for s in [
            "",
            "plain",
            "a \"b\" c",
            "back\\slash",
            "tab\there\nnl",
            "#x 'y'",
        ] {
            let q = quote(s);
            assert_eq!(parse_quoted(&q), Ok((s.to_string(), "")), "{q}");
            assert_eq!(strip_comment(&q), q, "a quoted '#' is not a comment");
        }
        assert_eq!(parse_quoted("'it''s' x"), Ok(("it's".to_string(), " x")));
        assert!(parse_quoted("\"\\q\"").is_err());
    }

    #[test]
    fn words() {
        assert_eq!(
            split_words("alice \"p w\" readonly").unwrap(),
            ["alice", "p w", "readonly"]
        );
        assert_eq!(
            split_words("\"alice pw readonly\"").unwrap(),
            ["alice", "pw", "readonly"]
        );
        assert_eq!(split_words("FLUSHALL \"\"").unwrap(), ["FLUSHALL", ""]);
        assert!(split_words("a \"b\"c").is_err());
        assert_eq!(
            split_yaml_key("listen: 127.0.0.1:1").unwrap(),
            ("listen".to_string(), "127.0.0.1:1".to_string())
        );
        assert!(split_yaml_key("listen 1").is_err());
    }
}
