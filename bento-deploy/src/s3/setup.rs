//! `bento server setup --s3`: what the store needs so that each host's key reads only its
//! own place and writes only its own logs — Garage's CLI (permissions per bucket: a bucket
//! for each host's bundle and one for its logs), or, for stores with prefix policies (AWS,
//! Ceph RGW, MinIO), an IAM policy per host.
//!
//! Everything printed comes from the URL (checked when parsed) and host names (checked when
//! registered): nothing needs quoting, and nothing else is put in.

use std::fmt::Write as _;

use crate::s3::url::S3Url;

/// The admin's key in Garage's CLI.
const ADMIN_KEY: &str = "bento-admin";

/// Garage CLI commands for `hosts` under `url`.
pub fn garage(url: &S3Url, hosts: &[String]) -> String {
    let mut out = String::new();
    out.push_str(
        "# Bento on Garage: run on a node of the cluster. Permissions are per bucket, so each\n\
         # host has a bucket for what the admin publishes (it may read) and one for its logs\n\
         # (it may write), and a key of its own.\n",
    );
    let _ = writeln!(
        out,
        "garage key create {ADMIN_KEY}   # the admin's: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY where bento deploy runs"
    );
    // The fleet's binary cache ([cache] signing_key): the admin's alone; a closure host
    // gets a copy of its closure in its own place.
    let cache = url.places("cache").main.bucket;
    let _ = writeln!(
        out,
        "\n# the fleet's binary cache, with [cache] signing_key (hosts never read it)"
    );
    let _ = writeln!(out, "garage bucket create {cache}");
    let _ = writeln!(
        out,
        "garage bucket allow --read --write {cache} --key {ADMIN_KEY}"
    );
    for host in hosts {
        let places = url.places(host);
        let key = format!("bento-{host}");
        let _ = writeln!(out, "\n# {host}");
        let mut buckets = vec![places.main.bucket.clone()];
        if places.logs.bucket != places.main.bucket {
            buckets.push(places.logs.bucket.clone());
        }
        for bucket in &buckets {
            let _ = writeln!(out, "garage bucket create {bucket}");
            let _ = writeln!(
                out,
                "garage bucket allow --read --write {bucket} --key {ADMIN_KEY}"
            );
        }
        let _ = writeln!(
            out,
            "garage key create {key}   # its id and secret: {host}'s s3_credentials file"
        );
        let _ = writeln!(
            out,
            "garage bucket allow --read {} --key {key}",
            places.main.bucket
        );
        if places.logs.bucket != places.main.bucket {
            let _ = writeln!(
                out,
                "garage bucket allow --write {} --key {key}",
                places.logs.bucket
            );
        } else {
            let _ = writeln!(
                out,
                "# refused here: writing its logs in {} would let {host} overwrite what it runs;\n\
                 # name a logs bucket in the URL (&logs=bento-{{host}}-logs)",
                places.main.bucket
            );
        }
    }
    out
}

/// IAM policies (AWS, and stores that read the same JSON) for `hosts` under `url`: the
/// admin's, and one per host: read its own place, write its own logs, list nothing.
pub fn policies(url: &S3Url, hosts: &[String]) -> String {
    let arn = |bucket: &str, prefix: &str| format!("arn:aws:s3:::{bucket}/{prefix}*");
    let cache = url.places("cache").main;
    let mut admin_resources = vec![arn(&cache.bucket, &cache.prefix)];
    let mut buckets = vec![cache.bucket.clone()];
    let mut out = String::new();
    for host in hosts {
        let places = url.places(host);
        admin_resources.push(arn(&places.main.bucket, &places.main.prefix));
        admin_resources.push(arn(&places.logs.bucket, &places.logs.prefix));
        for b in [&places.main.bucket, &places.logs.bucket] {
            if !buckets.contains(b) {
                buckets.push(b.clone());
            }
        }
        let policy = serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [
                { "Sid": "ReadItsOwnPlace", "Effect": "Allow", "Action": ["s3:GetObject"],
                  "Resource": [arn(&places.main.bucket, &places.main.prefix)] },
                { "Sid": "WriteItsOwnLogs", "Effect": "Allow", "Action": ["s3:PutObject"],
                  "Resource": [arn(&places.logs.bucket, &places.logs.prefix)] },
            ],
        });
        let _ = writeln!(
            out,
            "### {host}: the policy of its own user (its key: {host}'s s3_credentials)\n{}",
            serde_json::to_string_pretty(&policy).unwrap_or_default()
        );
    }
    admin_resources.dedup();
    let admin = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            { "Sid": "Publish", "Effect": "Allow",
              "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
              "Resource": admin_resources },
            { "Sid": "List", "Effect": "Allow", "Action": ["s3:ListBucket"],
              "Resource": buckets.iter().map(|b| format!("arn:aws:s3:::{b}")).collect::<Vec<_>>() },
        ],
    });
    format!(
        "### The admin's user (where bento deploy runs)\n{}\n{out}",
        serde_json::to_string_pretty(&admin).unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garage_gets_two_buckets_and_a_key_per_host() {
        let url =
            S3Url::parse("s3://bento-{host}?endpoint=http://a&region=garage&logs=bento-{host}-logs").unwrap();
        let text = garage(&url, &["web1".into()]);
        for line in [
            "garage bucket create bento-web1\n",
            "garage bucket create bento-web1-logs\n",
            "garage bucket allow --read bento-web1 --key bento-web1\n",
            "garage bucket allow --write bento-web1-logs --key bento-web1\n",
        ] {
            assert!(text.contains(line), "{line}: {text}");
        }
        assert!(!text.contains("--write bento-web1 --key bento-web1"), "{text}");
        let same = S3Url::parse("s3://bento-{host}?endpoint=http://a&region=garage").unwrap();
        assert!(garage(&same, &["web1".into()]).contains("refused here"));
    }

    #[test]
    fn policies_give_a_host_its_own_prefix_and_no_listing() {
        let url = S3Url::parse("s3://fleet/hosts/{host}?endpoint=https://s3.amazonaws.com&region=eu-west-1")
            .unwrap();
        let text = policies(&url, &["web1".into(), "db1".into()]);
        assert!(text.contains("\"arn:aws:s3:::fleet/hosts/web1/*\""), "{text}");
        assert!(
            text.contains("\"arn:aws:s3:::fleet/hosts/web1/logs/*\""),
            "{text}"
        );
        let web1 = &text[text.find("### web1").unwrap()..text.find("### db1").unwrap()];
        assert!(!web1.contains("ListBucket") && !web1.contains("db1/"), "{web1}");
    }
}
