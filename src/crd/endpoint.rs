//! Reading a `Database`'s endpoint: `host:port` (IPv6 in brackets), the DynamoDB URL form, and
//! the AWS region an RDS or DocumentDB host name implies. Pure functions every mode shares.

use super::{DatabaseSpec, Protocol};

/// Splits `host:port` (the port defaults to the protocol's); IPv6 hosts go in brackets.
pub fn split_endpoint(endpoint: &str, protocol: Protocol) -> Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = endpoint.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or_else(|| format!("{endpoint:?}: missing ']' after the IPv6 address"))?;
        (h.to_owned(), after.strip_prefix(':'))
    } else {
        match endpoint.split_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (endpoint.to_owned(), None),
        }
    };
    let port = match port {
        Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| format!("{endpoint:?}: the port {p:?} is not a number from 1 to 65535"))?,
        None => protocol.default_port(),
    };
    if host.is_empty() {
        return Err(format!("{endpoint:?} is not host:port"));
    }
    Ok((host, port))
}

/// `host:port`, with an IPv6 host in brackets.
pub fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

/// Splits a DynamoDB endpoint override, `[http://|https://]host[:port]`, into (plain HTTP?,
/// host, port).
pub fn split_url(endpoint: &str) -> Result<(bool, String, u16), String> {
    let (plain, rest) = match endpoint.split_once("://") {
        Some(("http", rest)) => (true, rest),
        Some(("https", rest)) => (false, rest),
        Some((scheme, _)) => return Err(format!("{endpoint:?}: scheme {scheme:?} is not http or https")),
        None => (false, endpoint),
    };
    let rest = rest.trim_end_matches('/');
    if rest.contains('/') {
        return Err(format!("{endpoint:?}: give host[:port] only, without a path"));
    }
    let (host, port) = split_endpoint(rest, Protocol::Dynamodb)?;
    let port = if plain && !rest.contains(':') { 80 } else { port };
    Ok((plain, host, port))
}

/// The region in an RDS or DocumentDB host name, e.g. `us-east-1` in
/// `orders.cluster-abc.us-east-1.rds.amazonaws.com`.
pub fn region_from_rds_host(host: &str) -> Option<String> {
    let labels: Vec<&str> = host.split('.').collect();
    let service = labels.iter().position(|l| *l == "rds" || *l == "docdb")?;
    let region = labels.get(service.checked_sub(1)?)?;
    let looks_like_region = region.split('-').count() >= 3 && region.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    looks_like_region.then(|| (*region).to_owned())
}

/// The region a Database is in: `spec.aws.region`, else the one its RDS endpoint names.
pub fn resolved_region(spec: &DatabaseSpec) -> Option<String> {
    spec.aws.region.clone().or_else(|| {
        let (host, _) = split_endpoint(spec.endpoint.as_deref()?, spec.protocol).ok()?;
        region_from_rds_host(&host)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_split_into_host_and_port_with_the_protocols_default() {
        assert_eq!(split_endpoint("db.internal", Protocol::Mysql).unwrap(), ("db.internal".into(), 3306));
        assert_eq!(split_endpoint("db.internal:6432", Protocol::Postgres).unwrap(), ("db.internal".into(), 6432));
        assert_eq!(split_endpoint("[::1]:5432", Protocol::Postgres).unwrap(), ("::1".into(), 5432));
        assert_eq!(split_endpoint("[::1]", Protocol::Mongodb).unwrap(), ("::1".into(), 27017));
        for bad in ["db:0", "db:x", ":5432", "[::1", "db:70000"] {
            assert!(split_endpoint(bad, Protocol::Postgres).is_err(), "{bad}");
        }
    }

    #[test]
    fn dynamodb_urls_name_scheme_host_and_port() {
        assert_eq!(split_url("http://localhost:8000").unwrap(), (true, "localhost".into(), 8000));
        assert_eq!(split_url("http://localhost").unwrap(), (true, "localhost".into(), 80));
        assert_eq!(split_url("vpce.example.com/").unwrap(), (false, "vpce.example.com".into(), 443));
        assert!(split_url("ftp://x").is_err());
        assert!(split_url("https://x/path").is_err());
    }

    #[test]
    fn region_is_read_from_rds_host_names() {
        assert_eq!(region_from_rds_host("orders.cluster-abc.us-east-1.rds.amazonaws.com").as_deref(), Some("us-east-1"));
        assert_eq!(region_from_rds_host("db.abc.eu-central-1.docdb.amazonaws.com").as_deref(), Some("eu-central-1"));
        assert_eq!(region_from_rds_host("127.0.0.1"), None);
        assert_eq!(region_from_rds_host("rds.amazonaws.com"), None);
    }
}
