//! The checks `portcullis doctor` runs, in the order a connection needs them.

use std::path::Path;
use std::time::{Duration, Instant};

use super::tls_probe::{fetch_chain, judge};
use super::{Check, Status};
use crate::authz::{DatabaseRef, allow_rules_for};
use crate::aws::rds::{self, AwsCheck, CheckStatus};
use crate::aws::region::RegionFound;
use crate::aws::{AwsContext, AwsError, Hop, imds, role_arn, session_name};
use crate::crd::{AccessRole, Database, Protocol};
use crate::proxy::Upstream;

/// Runs every check for `databases` (CA bundles from `secrets_dir`; the db users `roles`
/// allow are the roles tried for DocumentDB and DynamoDB).
pub async fn run(databases: &[Database], roles: &[AccessRole], secrets_dir: Option<&Path>, timeout: Duration) -> Vec<Check> {
    let aws = AwsContext::load().await;
    let mut checks = vec![region_check(aws.region())];
    let base = aws.base();
    let creds_ok = match base.get().await {
        Ok(_) => {
            let source = aws.chain_report().and_then(|r| r.source).unwrap_or("configured provider");
            checks.push(Check::new("AWS credentials", Status::Ok, format!("from {source}")));
            true
        }
        Err(e) => {
            checks.push(
                Check::new("AWS credentials", Status::Fail, e.to_string())
                    .remedy("give the proxy an AWS identity: IRSA (spec.proxy.iamRoleArn / the eks.amazonaws.com/role-arn annotation), EKS Pod Identity, or instance credentials"),
            );
            false
        }
    };
    if creds_ok {
        let sts = aws_sdk_sts::Client::new(&aws.sdk_config_with(base.clone()));
        match sts.get_caller_identity().send().await {
            Ok(out) => checks.push(Check::new("caller identity", Status::Ok, out.arn().unwrap_or("?").to_owned())),
            Err(e) => {
                checks.push(Check::new("caller identity", Status::Fail, crate::aws::describe_sdk_error(&e)).remedy(
                    "the credentials were found but STS refuses them: they may be expired or revoked, or the STS endpoint is unreachable (VPC endpoint?)",
                ))
            }
        }
    } else {
        checks.push(Check::new("caller identity", Status::Skip, "no credentials"));
    }
    checks.push(imds_check(creds_ok).await);
    for db in databases {
        checks.extend(database_checks(&aws, db, roles, secrets_dir, timeout).await);
    }
    checks
}

/// The default region: where it came from, or that none was found (the SDK's own IMDS
/// warnings are not logged; this line is the verdict).
fn region_check(found: &RegionFound) -> Check {
    match &found.region {
        Some(_) => Check::new("AWS region", Status::Ok, found.describe()),
        None => Check::new("AWS region", Status::Warn, found.describe())
            .remedy("set AWS_REGION (STS and the AWS checks use it); each Database's own region comes from spec.aws.region or its RDS endpoint"),
    }
}

async fn imds_check(creds_ok: bool) -> Check {
    if let Some(why) = imds::not_probed_because() {
        return Check::new("instance metadata (IMDS)", Status::Skip, format!("not probed: {why}"));
    }
    let verdict = imds::probe(&imds::endpoint(), imds::PROBE_TIMEOUT).await;
    let status = match &verdict {
        imds::ImdsVerdict::Working => Status::Ok,
        imds::ImdsVerdict::HopLimitProbablyOne => Status::Fail,
        imds::ImdsVerdict::V1Only { .. } => Status::Warn,
        imds::ImdsVerdict::Unreachable { .. } if creds_ok => Status::Skip,
        imds::ImdsVerdict::Unreachable { .. } => Status::Warn,
    };
    let check = Check::new("instance metadata (IMDS)", status, verdict.explain());
    match verdict {
        imds::ImdsVerdict::HopLimitProbablyOne => check.remedy(
            "use IRSA or EKS Pod Identity for the proxy (preferred), or raise the hop limit: aws ec2 modify-instance-metadata-options --instance-id ID --http-put-response-hop-limit 2 --http-tokens required",
        ),
        imds::ImdsVerdict::V1Only { .. } => check.remedy("require IMDSv2 on the instance (--http-tokens required) and prefer IRSA or Pod Identity"),
        _ => check,
    }
}

async fn database_checks(aws: &AwsContext, db: &Database, roles: &[AccessRole], secrets_dir: Option<&Path>, timeout: Duration) -> Vec<Check> {
    let key = format!("{}/{}", db.metadata.namespace.as_deref().unwrap_or("default"), db.metadata.name.as_deref().unwrap_or(""));
    let label = |what: &str| format!("db {key}: {what}");
    let mut checks = Vec::new();
    let upstream = match Upstream::resolve(db, secrets_dir, 0) {
        Ok(u) => u,
        Err(e) => {
            checks.push(Check::new(label("configuration"), Status::Fail, e.to_string()).remedy("fix the Database manifest"));
            return checks;
        }
    };
    let mut first_hop_ok = true;
    if let Some(role) = &upstream.assume_role_arn {
        let creds = aws.credentials_for(Some(role), upstream.external_id.as_deref(), &upstream.region);
        let got = creds.get().await;
        first_hop_ok = got.is_ok();
        checks.push(match got {
            Ok(_) => Check::new(label("assume role"), Status::Ok, format!("assumed {role}")),
            Err(e @ AwsError::AssumeRole { .. }) => {
                let text = e.to_string();
                let (first, rest) = text.split_once('\n').unwrap_or((&text, ""));
                Check::new(label("assume role"), Status::Fail, first.to_owned()).remedy(rest.trim().to_owned())
            }
            Err(e) => Check::new(label("assume role"), Status::Fail, e.to_string()),
        });
    }
    if matches!(upstream.protocol, Protocol::Mongodb | Protocol::Dynamodb) && !first_hop_ok {
        checks.push(Check::new(label("db user roles"), Status::Skip, "the assumeRoleArn hop failed, so no db user's role can be tried"));
    } else if matches!(upstream.protocol, Protocol::Mongodb | Protocol::Dynamodb) {
        checks.extend(db_user_role_checks(aws, db, &upstream, roles, &label).await);
    }
    let addr = upstream.endpoint();
    let started = Instant::now();
    let reachable = match tokio::time::timeout(timeout, tokio::net::TcpStream::connect((upstream.host.as_str(), upstream.port))).await {
        Ok(Ok(stream)) => {
            let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| addr.clone());
            checks.push(Check::new(label("network path"), Status::Ok, format!("connected to {peer} in {} ms", started.elapsed().as_millis())));
            true
        }
        Ok(Err(e)) => {
            checks.push(
                Check::new(label("network path"), Status::Fail, format!("cannot connect to {addr}: {e}"))
                    .remedy(format!("nothing accepts connections at {addr}: check the endpoint and port in the Database")),
            );
            false
        }
        Err(_) => {
            checks.push(
                Check::new(label("network path"), Status::Fail, format!("connecting to {addr} timed out after {timeout:?}"))
                    .remedy(format!("a timeout usually means a security group or NACL drops the traffic: allow the proxy's nodes/pods to reach {addr}")),
            );
            false
        }
    };
    if reachable && matches!(upstream.protocol, Protocol::Postgres | Protocol::Mysql | Protocol::Mongodb) {
        checks.push(match fetch_chain(&upstream.host, upstream.port, upstream.protocol, timeout).await {
            Err(e) if upstream.protocol == Protocol::Mongodb && e.starts_with("TLS handshake failed") => {
                Check::new(label("TLS certificate"), Status::Fail, e).remedy(
                    "DocumentDB logs in over TLS only: set the cluster parameter `tls` to enabled (and reboot the instances), or check that spec.endpoint is the cluster's DocumentDB port",
                )
            }
            Err(e) => Check::new(label("TLS certificate"), Status::Fail, e),
            Ok(chain) => match judge(&chain, upstream.server_name_str(), &upstream.verifier) {
                Err(e) => Check::new(label("TLS certificate"), Status::Fail, e),
                Ok(f) if !f.has_san => Check::new(
                    label("TLS certificate"),
                    Status::Fail,
                    format!("{} has no subject alternative names: a legacy Common-Name-only certificate", f.subject),
                )
                .remedy("rotate the instance's certificate authority to a current one (e.g. rds-ca-rsa2048-g1) and update spec.tls.caSecretRef"),
                Ok(f) if f.expired => Check::new(label("TLS certificate"), Status::Fail, format!("{} expired {}", f.subject, f.not_after))
                    .remedy("rotate the instance's certificate authority"),
                Ok(f) => match f.verification {
                    Ok(()) => Check::new(label("TLS certificate"), Status::Ok, format!("{} verifies, valid until {}", f.subject, f.not_after)),
                    Err(e) => Check::new(label("TLS certificate"), Status::Fail, format!("{}: {e}", f.subject))
                        .remedy("point spec.tls.caSecretRef at the CA bundle of the database's region, and spec.tls.serverName at a name in the certificate"),
                },
            },
        });
    } else if reachable {
        checks.push(Check::new(
            label("TLS certificate"),
            Status::Skip,
            "DynamoDB is reached over HTTPS: the proxy's AWS SDK verifies its certificate on every request",
        ));
    }
    checks.push(iam_auth_check(aws, db, &label("IAM authentication")).await);
    checks
}

/// DocumentDB and DynamoDB log in as the role a db user names: tries each role the AccessRoles
/// allow on `db`, after the Database's own assumeRoleArn hop, as the proxy would.
async fn db_user_role_checks(aws: &AwsContext, db: &Database, upstream: &Upstream, roles: &[AccessRole], label: &dyn Fn(&str) -> String) -> Vec<Check> {
    let namespace = db.metadata.namespace.as_deref().unwrap_or("default");
    let labels = db.metadata.labels.clone().unwrap_or_default();
    let reference = DatabaseRef { namespace, name: db.metadata.name.as_deref().unwrap_or(""), labels: &labels };
    let mut users: Vec<&str> = allow_rules_for(&reference, roles).into_iter().flat_map(|r| r.db_users.iter().map(String::as_str)).collect();
    users.sort_unstable();
    users.dedup();
    if users.is_empty() {
        return vec![Check::new(
            label("db user roles"),
            Status::Skip,
            "no AccessRole given allows a db user on this Database: pass the AccessRoles too (--manifests, or the config's resources) to try each db user's role",
        )];
    }
    let partition = crate::aws::partition_of(&upstream.region);
    let account = upstream.account_id.as_deref().unwrap_or_default();
    let mut checks = Vec::new();
    for user in users {
        let what = label(&format!("db user {user}"));
        if user == "*" {
            checks.push(Check::new(what, Status::Skip, "dbUsers has `*`: any role may be asked for, so none is tried; name the roles to have them checked"));
            continue;
        }
        let role = match role_arn(user, partition, account) {
            Ok(role) => role,
            Err(e) => {
                checks.push(Check::new(what, Status::Fail, e.to_string()).remedy(format!(
                    "a db user of a {} Database names an IAM role (a name, or an ARN) in the database's account {account}: fix the AccessRole's dbUsers",
                    upstream.protocol
                )));
                continue;
            }
        };
        let mut hops: Vec<Hop> = upstream.assume_role_arn.iter().map(|arn| Hop { role_arn: arn.clone(), session_name: "portcullis".into() }).collect();
        hops.push(Hop { role_arn: role.clone(), session_name: session_name("portcullis-doctor") });
        let outcome = match aws.credentials_for_hops(hops, upstream.external_id.as_deref(), &upstream.region) {
            Ok(creds) => creds.get().await.map(|_| ()),
            Err(e) => Err(e),
        };
        checks.push(match outcome {
            Ok(()) => Check::new(what, Status::Ok, format!("assumed {role}")),
            Err(e @ AwsError::AssumeRole { .. }) => {
                let text = e.to_string();
                let (first, rest) = text.split_once('\n').unwrap_or((&text, ""));
                Check::new(what, Status::Fail, first.to_owned()).remedy(rest.trim().to_owned())
            }
            Err(e) => Check::new(what, Status::Fail, e.to_string()),
        });
    }
    checks
}

async fn iam_auth_check(aws: &AwsContext, db: &Database, label: &str) -> Check {
    let check = rds::check_database(&db.spec, aws, rds::Caller::Doctor).await;
    iam_auth_line(label, &check)
}

/// The doctor's line for the shared RDS check (the same verdict as the operator's
/// `IamAuthEnabled` condition).
fn iam_auth_line(label: &str, check: &AwsCheck) -> Check {
    let database = check.database.as_ref().map(|d| d.to_string());
    match (check.status, check.reason) {
        (CheckStatus::True, _) => {
            let detail = match (&database, check.engine_version.as_deref()) {
                (Some(db), Some(version)) => format!("enabled on {db} (engine {version})"),
                (Some(db), None) => format!("enabled on {db}"),
                (None, _) => check.message.clone(),
            };
            Check::new(label, Status::Ok, detail)
        }
        (CheckStatus::False, "Disabled") => {
            let what = database.unwrap_or_else(|| "the database".into());
            let command = check
                .enable_command
                .clone()
                .unwrap_or_else(|| "aws rds modify-db-instance --db-instance-identifier ID --enable-iam-database-authentication --apply-immediately".into());
            Check::new(label, Status::Fail, format!("IAM database authentication is off on {what}"))
                .remedy(format!("{command}, or set spec.aws.enableIamAuth: true and let the operator do it; then GRANT rds_iam TO each db user"))
        }
        (CheckStatus::False, "Enabling") => {
            Check::new(label, Status::Warn, check.message.clone()).remedy("wait a few minutes for the modification to apply, then run the doctor again")
        }
        (CheckStatus::False, "NotFound") => {
            Check::new(label, Status::Fail, check.message.clone()).remedy("set spec.aws.rds.instanceId or clusterId, and check the region and account")
        }
        (CheckStatus::False, _) => {
            Check::new(label, Status::Fail, check.message.clone()).remedy("fix the database or the Database manifest as the detail says")
        }
        (CheckStatus::Unknown, "NotChecked") => Check::new(label, Status::Skip, check.message.clone()),
        (CheckStatus::Unknown, _) => Check::new(label, Status::Fail, format!("cannot describe the database: {}", check.message))
            .remedy("allow the proxy's identity rds:DescribeDBInstances and rds:DescribeDBClusters (see `portcullis iam policy`)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_types::region::Region;

    #[test]
    fn the_region_line_names_the_source_or_warns_with_what_to_set() {
        let found = RegionFound { region: Some(Region::new("us-east-1")), source: Some(crate::aws::region::sources::PROFILE) };
        let ok = region_check(&found);
        assert_eq!((ok.status, ok.detail.as_str()), (Status::Ok, "us-east-1 (from profile)"));
        let missing = region_check(&RegionFound::default());
        assert_eq!(missing.status, Status::Warn);
        assert!(missing.detail.contains("IMDS") && missing.remedy.unwrap().contains("AWS_REGION"));
    }

    fn verdict(status: CheckStatus, reason: &'static str) -> AwsCheck {
        AwsCheck {
            status,
            reason,
            message: format!("{reason} message"),
            engine_version: Some("16.3".into()),
            resource_id: None,
            database: Some(rds::DbRef { kind: rds::DbKind::Instance, id: "orders".into() }),
            enable_command: None,
            retry_soon: false,
            throttled: false,
            identity: None,
        }
    }

    #[test]
    fn the_iam_line_tells_the_shared_verdict_in_the_doctors_words() {
        let ok = iam_auth_line("iam", &verdict(CheckStatus::True, "Enabled"));
        assert_eq!((ok.status, ok.detail.as_str()), (Status::Ok, "enabled on instance orders (engine 16.3)"));
        let off =
            AwsCheck { enable_command: Some("aws rds modify-db-instance --db-instance-identifier orders".into()), ..verdict(CheckStatus::False, "Disabled") };
        let off = iam_auth_line("iam", &off);
        assert_eq!((off.status, off.detail.as_str()), (Status::Fail, "IAM database authentication is off on instance orders"));
        assert!(off.remedy.unwrap().starts_with("aws rds modify-db-instance --db-instance-identifier orders, or set spec.aws.enableIamAuth"));
        assert_eq!(iam_auth_line("iam", &verdict(CheckStatus::Unknown, "NotChecked")).status, Status::Skip);
        for (status, reason) in [(CheckStatus::Unknown, "CheckFailed"), (CheckStatus::False, "NotFound"), (CheckStatus::False, "EndpointMismatch")] {
            let line = iam_auth_line("iam", &verdict(status, reason));
            assert!(line.status == Status::Fail && line.remedy.is_some(), "{reason}: a failure names a remedy");
        }
    }
}
