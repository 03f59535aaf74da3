//! Just enough of MySQL's SQL to see `USE db` in a COM_QUERY: statements split at `;` outside
//! quotes and comments, and the database a `USE` names.

/// What a COM_QUERY's text does to the current database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UseStatement {
    /// No `USE` in it.
    None,
    /// The whole text is one `USE db` (the name unquoted).
    Alone(String),
    /// A `USE` among other statements (a multi-statement), or one the proxy cannot read.
    Mixed,
}

/// Splits `sql` into statements at `;` outside quotes (`'`, `"`, `` ` ``) and comments
/// (`-- `, `#`, `/* */`), each without its comments and surrounding whitespace; empty ones are
/// dropped.
fn statements(sql: &str) -> Vec<String> {
    let bytes = sql.as_bytes();
    let (mut out, mut current) = (Vec::new(), String::new());
    let (mut i, mut executable) = (0, 0usize);
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'\'' | b'"' | b'`' => {
                let start = i;
                i += 1;
                while i < bytes.len() && bytes[i] != c {
                    if bytes[i] == b'\\' && c != b'`' {
                        i += 1;
                    }
                    i += 1;
                }
                i = (i + 1).min(bytes.len());
                current.push_str(&sql[start..i]);
                continue;
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') && bytes.get(i + 2).is_none_or(|b| b.is_ascii_whitespace()) => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                current.push(' ');
                continue;
            }
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                current.push(' ');
                continue;
            }
            // An executable comment (`/*! … */`, `/*!50700 … */`) is code to MySQL: read on.
            b'/' if bytes.get(i + 1) == Some(&b'*') && bytes.get(i + 2) == Some(&b'!') => {
                i += 3;
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
                executable += 1;
                current.push(' ');
                continue;
            }
            b'*' if executable > 0 && bytes.get(i + 1) == Some(&b'/') => {
                executable -= 1;
                i += 2;
                current.push(' ');
                continue;
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i < bytes.len() && !(bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/')) {
                    i += 1;
                }
                i = (i + 2).min(bytes.len());
                current.push(' ');
                continue;
            }
            b';' => out.push(std::mem::take(&mut current)),
            _ => {
                let ch = sql[i..].chars().next().unwrap_or(' ');
                current.push(ch);
                i += ch.len_utf8();
                continue;
            }
        }
        i += 1;
    }
    out.push(current);
    out.into_iter().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect()
}

/// Whether `sql` (a COM_QUERY's text) changes the database, and how.
pub fn use_statement(sql: &[u8]) -> UseStatement {
    // Clients in other character sets (latin1 …) send text that is not UTF-8; the keywords,
    // quotes, comments and `;` that matter here are ASCII either way.
    let text = String::from_utf8_lossy(sql);
    let all = statements(&text);
    // `USE` then a space, a backtick or nothing (`USE\`db\`` is a USE too).
    let is_use = |s: &&String| s.get(..3).is_some_and(|w| w.eq_ignore_ascii_case("use")) && s[3..].chars().next().is_none_or(|c| c.is_whitespace() || c == '`');
    let uses: Vec<&String> = all.iter().filter(is_use).collect();
    match (uses.as_slice(), all.len()) {
        ([], _) => UseStatement::None,
        ([one], 1) => {
            // After the keyword: one name, bare or in backticks (a doubled backtick is one).
            let rest = one[3..].trim();
            let name = match rest.strip_prefix('`') {
                Some(quoted) => quoted.strip_suffix('`').filter(|n| !n.ends_with('`') || n.ends_with("``")).map(|n| n.replace("``", "`")),
                None => (!rest.is_empty() && !rest.contains(|c: char| c.is_ascii_whitespace() || c == '`')).then(|| rest.to_owned()),
            };
            match name {
                Some(name) if !name.is_empty() => UseStatement::Alone(name),
                _ => UseStatement::Mixed,
            }
        }
        _ => UseStatement::Mixed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_use_alone_is_read_and_one_among_others_is_mixed() {
        assert_eq!(use_statement(b"USE reports"), UseStatement::Alone("reports".into()));
        assert_eq!(use_statement(b"  use `my db` ; "), UseStatement::Alone("my db".into()));
        assert_eq!(use_statement(b"/* hi */ USE orders -- there\n"), UseStatement::Alone("orders".into()));
        assert_eq!(use_statement(b"SELECT 1; USE reports"), UseStatement::Mixed);
        assert_eq!(use_statement(b"USE orders; SELECT 1"), UseStatement::Mixed);
        assert_eq!(use_statement(b"select 1;/**/use reports"), UseStatement::Mixed);
        assert_eq!(use_statement(b"USE"), UseStatement::Mixed);
        assert_eq!(use_statement(b"USE`reports`"), UseStatement::Alone("reports".into()));
        assert_eq!(use_statement(b"SELECT 1; USE`reports`"), UseStatement::Mixed);
        assert_eq!(use_statement(b"SELECT 1; /*!USE reports*/"), UseStatement::Mixed, "executable comments are code");
        assert_eq!(use_statement(b"/*!50000 USE reports */"), UseStatement::Alone("reports".into()));
        assert_eq!(use_statement(b"SELECT 1 /* ; USE reports */"), UseStatement::None, "a plain comment is not");
        assert_eq!(use_statement(b"INSERT INTO t (user_id, name) VALUES (1, 'caf\xe9')"), UseStatement::None, "latin1 text is read too");
        assert_eq!(use_statement(b"SELECT 'caf\xe9'; USE reports"), UseStatement::Mixed);
        assert_eq!(use_statement(b"uselect\xa0?"), UseStatement::None);
        for none in [
            &b"SELECT 'USE reports'"[..],
            b"SELECT 1 -- ; USE reports",
            b"SELECT `use`",
            b"INSERT INTO t VALUES ('a;USE b')",
            b"select user()",
            b"SELECT 1 # ;use x\n",
        ] {
            assert_eq!(use_statement(none), UseStatement::None, "{:?}", String::from_utf8_lossy(none));
        }
    }
}
