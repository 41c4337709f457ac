//! Bucket policies, ACLs and the public access block, end to end: anonymous requests are
//! refused until a policy or an ACL opens the bucket, explicit Deny wins over every grant,
//! conditions see the real client address (or the trusted proxy's X-Forwarded-For).

use crate::common::*;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    AccessControlPolicy, BucketCannedAcl, Grant, Grantee, ObjectCannedAcl, Owner, Permission,
    PublicAccessBlockConfiguration, Type,
};

fn xml_code(body: &str) -> String {
    body.split("<Code>")
        .nth(1)
        .and_then(|s| s.split("</Code>").next())
        .unwrap_or_default()
        .to_string()
}

async fn anon(method: &str, url: &str) -> (u16, String) {
    let (st, _, body) = raw(
        method,
        url,
        &[],
        if method == "PUT" { b"anon".to_vec() } else { vec![] },
    )
    .await;
    (st, body)
}

async fn new_key(srv: &Server, name: &str) -> (String, aws_sdk_s3::Client) {
    let (c, key, err) = cli(srv, &["key", "create", "--name", name]);
    assert_eq!(c, 0, "{err}");
    let ak = key["access_key"].as_str().unwrap().to_string();
    let sk = key["secret_key"].as_str().unwrap().to_string();
    let client = client_for(&srv.s3, &ak, &sk);
    (ak, client)
}

async fn put(c: &aws_sdk_s3::Client, b: &str, k: &str, body: &'static [u8]) {
    c.put_object()
        .bucket(b)
        .key(k)
        .body(ByteStream::from_static(body))
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn bucket_policies() {
    let srv = Server::start();
    let root = srv.client();
    root.create_bucket().bucket("web").send().await.unwrap();
    put(&root, "web", "index.html", b"<h1>hi</h1>").await;
    put(&root, "web", "private/x", b"secret").await;
    put(&root, "web", "public/a", b"a").await;
    let url = |path: &str| format!("{}/web{path}", srv.s3);

    // No policy: anonymous requests are refused.
    let (st, body) = anon("GET", &url("/index.html")).await;
    assert_eq!((st, xml_code(&body).as_str()), (403, "AccessDenied"));
    assert_eq!(anon("GET", &url("")).await.0, 403);
    let e = root.get_bucket_policy().bucket("web").send().await.unwrap_err();
    assert_eq!((code(&e).as_str(), status(&e)), ("NoSuchBucketPolicy", 404));
    assert_eq!(
        code(&root.get_bucket_policy_status().bucket("web").send().await.unwrap_err()),
        "NoSuchBucketPolicy"
    );

    // Malformed policies are refused with a reason.
    for bad in [
        "{not json",
        r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::other/*"}]}"#,
        r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:Teleport","Resource":"arn:aws:s3:::web/*"}]}"#,
        r#"{"Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::web/*"}]}"#,
    ] {
        let e = root
            .put_bucket_policy()
            .bucket("web")
            .policy(bad)
            .send()
            .await
            .unwrap_err();
        assert_eq!((code(&e).as_str(), status(&e)), ("MalformedPolicy", 400), "{bad}");
    }

    // Public read of web/*, except web/private/* (explicit deny wins).
    let policy = r#"{"Version":"2012-10-17","Statement":[
        {"Sid":"PublicRead","Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::web/*"},
        {"Sid":"KeepPrivate","Effect":"Deny","Principal":"*","Action":"s3:*","Resource":"arn:aws:s3:::web/private/*"}]}"#;
    root.put_bucket_policy()
        .bucket("web")
        .policy(policy)
        .send()
        .await
        .unwrap();
    assert_eq!(
        root.get_bucket_policy().bucket("web").send().await.unwrap().policy(),
        Some(policy)
    );
    let status_out = root.get_bucket_policy_status().bucket("web").send().await.unwrap();
    assert_eq!(status_out.policy_status().and_then(|s| s.is_public()), Some(true));
    let (st, body) = anon("GET", &url("/index.html")).await;
    assert_eq!((st, body.as_str()), (200, "<h1>hi</h1>"));
    assert_eq!(anon("HEAD", &url("/index.html")).await.0, 200);
    assert_eq!(anon("GET", &url("/private/x")).await.0, 403, "explicit deny wins");
    assert_eq!(anon("PUT", &url("/new")).await.0, 403, "the policy allows reads only");
    assert_eq!(anon("GET", &url("")).await.0, 403, "listing is not granted");
    assert_eq!(anon("DELETE", &url("/index.html")).await.0, 403);

    // A key with write permission is still bound by the explicit Deny.
    let (_alice_ak, alice) = new_key(&srv, "alice").await;
    let (c, _, err) = cli(
        &srv,
        &["key", "allow", &_alice_ak, "--bucket", "web", "--permission", "write"],
    );
    assert_eq!(c, 0, "{err}");
    put(&alice, "web", "public/b", b"b").await;
    let e = alice
        .get_object()
        .bucket("web")
        .key("private/x")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDenied");
    let del = alice
        .delete_objects()
        .bucket("web")
        .delete(
            aws_sdk_s3::types::Delete::builder()
                .objects(
                    aws_sdk_s3::types::ObjectIdentifier::builder()
                        .key("private/x")
                        .build()
                        .unwrap(),
                )
                .objects(
                    aws_sdk_s3::types::ObjectIdentifier::builder()
                        .key("public/b")
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(del.deleted().len(), 1);
    assert_eq!(del.deleted()[0].key(), Some("public/b"));
    assert_eq!(del.errors().len(), 1);
    assert_eq!(
        (del.errors()[0].key(), del.errors()[0].code()),
        (Some("private/x"), Some("AccessDenied"))
    );
    // Root is not subject to bucket policies.
    assert!(root.get_object().bucket("web").key("private/x").send().await.is_ok());

    // Conditions: listing only under public/, only from the loopback network.
    let list_policy = |net: &str| {
        format!(
            r#"{{"Statement":[{{"Effect":"Allow","Principal":{{"AWS":["*"]}},"Action":["s3:ListBucket"],"Resource":["arn:aws:s3:::web"],
            "Condition":{{"StringLike":{{"s3:prefix":["public/*"]}},"IpAddress":{{"aws:SourceIp":["{net}"]}}}}}}]}}"#
        )
    };
    root.put_bucket_policy()
        .bucket("web")
        .policy(list_policy("10.0.0.0/8"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        root.get_bucket_policy_status()
            .bucket("web")
            .send()
            .await
            .unwrap()
            .policy_status()
            .and_then(|s| s.is_public()),
        Some(false),
        "tied to a source network"
    );
    assert_eq!(
        anon("GET", &url("?list-type=2&prefix=public/")).await.0,
        403,
        "client is not in 10/8"
    );
    root.put_bucket_policy()
        .bucket("web")
        .policy(list_policy("127.0.0.0/8"))
        .send()
        .await
        .unwrap();
    let (st, body) = anon("GET", &url("?list-type=2&prefix=public/")).await;
    assert_eq!(st, 200, "{body}");
    assert!(
        body.contains("<Key>public/a</Key>") && !body.contains("index.html"),
        "{body}"
    );
    assert_eq!(anon("GET", &url("?list-type=2&prefix=private/")).await.0, 403);
    assert_eq!(anon("GET", &url("?list-type=2")).await.0, 403, "s3:prefix absent");
    // Reads were not granted by this policy.
    assert_eq!(anon("GET", &url("/index.html")).await.0, 403);

    // aws:Referer.
    root.put_bucket_policy()
        .bucket("web")
        .policy(
            r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::web/*",
            "Condition":{"StringLike":{"aws:Referer":["https://example.com/*"]}}}]}"#,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(anon("GET", &url("/index.html")).await.0, 403);
    let (st, _, _) = raw(
        "GET",
        &url("/index.html"),
        &[("referer", "https://example.com/page")],
        vec![],
    )
    .await;
    assert_eq!(st, 200);
    let (st, _, _) = raw(
        "GET",
        &url("/index.html"),
        &[("referer", "https://evil.example/")],
        vec![],
    )
    .await;
    assert_eq!(st, 403);

    // s3:x-amz-acl: bob may upload only when he hands the bucket owner full control.
    let (bob_ak, bob) = new_key(&srv, "bob").await;
    let p = format!(
        r#"{{"Statement":[{{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::000000000000:user/bob"}},"Action":"s3:PutObject",
        "Resource":"arn:aws:s3:::web/uploads/*","Condition":{{"StringEquals":{{"s3:x-amz-acl":"bucket-owner-full-control"}}}}}},
        {{"Effect":"Allow","Principal":{{"AWS":"{bob_ak}"}},"Action":"s3:GetObject","Resource":"arn:aws:s3:::web/uploads/*"}}]}}"#
    );
    root.put_bucket_policy().bucket("web").policy(p).send().await.unwrap();
    let e = bob
        .put_object()
        .bucket("web")
        .key("uploads/1")
        .body(ByteStream::from_static(b"1"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDenied");
    bob.put_object()
        .bucket("web")
        .key("uploads/1")
        .acl(ObjectCannedAcl::BucketOwnerFullControl)
        .body(ByteStream::from_static(b"1"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        body_bytes(bob.get_object().bucket("web").key("uploads/1").send().await.unwrap()).await,
        b"1"
    );
    let e = bob
        .get_object()
        .bucket("web")
        .key("index.html")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDenied");

    // Deleting the policy closes the bucket again.
    root.delete_bucket_policy().bucket("web").send().await.unwrap();
    assert_eq!(anon("GET", &url("/index.html")).await.0, 403);
    // bob still owns the object he wrote (its ACL names him owner), as in S3.
    assert!(bob.get_object().bucket("web").key("uploads/1").send().await.is_ok());
    let e = bob
        .put_object()
        .bucket("web")
        .key("uploads/2")
        .acl(ObjectCannedAcl::BucketOwnerFullControl)
        .body(ByteStream::from_static(b"2"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDenied");
    // Anonymous callers cannot list buckets or create them.
    assert_eq!(anon("GET", &format!("{}/", srv.s3)).await.0, 403);
    assert_eq!(anon("PUT", &format!("{}/anon-bucket", srv.s3)).await.0, 403);
}

#[tokio::test]
async fn source_ip_and_secure_transport_behind_a_trusted_proxy() {
    let policy = r#"{"Statement":[
        {"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::lb-bucket/*",
         "Condition":{"IpAddress":{"aws:SourceIp":"10.1.0.0/16"}}},
        {"Effect":"Deny","Principal":"*","Action":"s3:*","Resource":"arn:aws:s3:::lb-bucket/*",
         "Condition":{"Bool":{"aws:SecureTransport":"false"}}}]}"#;
    for trusted in [false, true] {
        let srv = if trusted {
            Server::start_with(&["--trusted-proxies", "127.0.0.1/32"], &[])
        } else {
            Server::start()
        };
        let root = srv.client();
        root.create_bucket().bucket("lb-bucket").send().await.unwrap();
        put(&root, "lb-bucket", "k", b"v").await;
        root.put_bucket_policy()
            .bucket("lb-bucket")
            .policy(policy)
            .send()
            .await
            .unwrap();
        let url = format!("{}/lb-bucket/k", srv.s3);
        let fwd = [("x-forwarded-for", "10.1.2.3"), ("x-forwarded-proto", "https")];
        let (st, _, _) = raw("GET", &url, &fwd, vec![]).await;
        // From an untrusted peer the forwarded headers are ignored: 127.0.0.1 is not in
        // 10.1/16 and the connection is plain HTTP.
        assert_eq!(st, if trusted { 200 } else { 403 }, "trusted={trusted}");
        let (st, _, _) = raw(
            "GET",
            &url,
            &[("x-forwarded-for", "10.1.2.3"), ("x-forwarded-proto", "http")],
            vec![],
        )
        .await;
        assert_eq!(st, 403, "insecure transport is denied");
        let (st, _, _) = raw(
            "GET",
            &url,
            &[
                ("x-forwarded-for", "10.9.9.9, 10.1.2.3"),
                ("x-forwarded-proto", "https"),
            ],
            vec![],
        )
        .await;
        assert_eq!(st, if trusted { 200 } else { 403 }, "the nearest untrusted hop counts");
        let (st, _, _) = raw(
            "GET",
            &url,
            &[("x-forwarded-for", "192.168.1.1"), ("x-forwarded-proto", "https")],
            vec![],
        )
        .await;
        assert_eq!(st, 403);
    }
}

#[tokio::test]
async fn acls_and_public_access_block() {
    let srv = Server::start();
    let root = srv.client();
    let (bob_ak, bob) = new_key(&srv, "bob").await;
    root.create_bucket()
        .bucket("shared")
        .acl(BucketCannedAcl::PublicRead)
        .send()
        .await
        .unwrap();
    let acl = root.get_bucket_acl().bucket("shared").send().await.unwrap();
    assert_eq!(acl.owner().and_then(|o| o.id()), Some(AK));
    assert!(acl.grants().iter().any(|g| g.permission() == Some(&Permission::Read)
        && g.grantee().and_then(|ge| ge.uri()) == Some("http://acs.amazonaws.com/groups/global/AllUsers")));
    let url = |p: &str| format!("{}/shared{p}", srv.s3);

    // public-read on the bucket lets anyone list, not read objects.
    root.put_object()
        .bucket("shared")
        .key("open")
        .acl(ObjectCannedAcl::PublicRead)
        .body(ByteStream::from_static(b"open"))
        .send()
        .await
        .unwrap();
    put(&root, "shared", "closed", b"closed").await;
    assert_eq!(anon("GET", &url("?list-type=2")).await.0, 200);
    assert_eq!(anon("GET", &url("/open")).await, (200, "open".to_string()));
    assert_eq!(anon("GET", &url("/closed")).await.0, 403);
    assert_eq!(anon("PUT", &url("/new")).await.0, 403);

    // Object ACLs: canned and by grant.
    root.put_object_acl()
        .bucket("shared")
        .key("closed")
        .grant_read(format!("id=\"{bob_ak}\""))
        .send()
        .await
        .unwrap();
    assert_eq!(
        body_bytes(bob.get_object().bucket("shared").key("closed").send().await.unwrap()).await,
        b"closed"
    );
    assert_eq!(anon("GET", &url("/closed")).await.0, 403);
    let oacl = root
        .get_object_acl()
        .bucket("shared")
        .key("closed")
        .send()
        .await
        .unwrap();
    assert!(
        oacl.grants()
            .iter()
            .any(|g| g.grantee().and_then(|ge| ge.id()) == Some(bob_ak.as_str())
                && g.permission() == Some(&Permission::Read))
    );
    let e = root
        .put_object_acl()
        .bucket("shared")
        .key("closed")
        .grant_read("emailAddress=\"bob@example.com\"")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        (code(&e).as_str(), status(&e)),
        ("UnresolvableGrantByEmailAddress", 400)
    );
    let e = root
        .put_object_acl()
        .bucket("shared")
        .key("closed")
        .acl(ObjectCannedAcl::from("world-writable"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgument");

    // An AccessControlPolicy body: everyone may write to the bucket.
    let grant = |ty: Type, uri: Option<&str>, id: Option<&str>, p: Permission| {
        let mut ge = Grantee::builder().r#type(ty);
        if let Some(u) = uri {
            ge = ge.uri(u);
        }
        if let Some(i) = id {
            ge = ge.id(i);
        }
        Grant::builder().grantee(ge.build().unwrap()).permission(p).build()
    };
    root.put_bucket_acl()
        .bucket("shared")
        .access_control_policy(
            AccessControlPolicy::builder()
                .owner(Owner::builder().id(AK).build())
                .grants(grant(Type::CanonicalUser, None, Some(AK), Permission::FullControl))
                .grants(grant(
                    Type::Group,
                    Some("http://acs.amazonaws.com/groups/global/AllUsers"),
                    None,
                    Permission::Write,
                ))
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(anon("PUT", &url("/dropbox")).await.0, 200);
    assert_eq!(anon("GET", &url("?list-type=2")).await.0, 403, "READ was replaced");

    // Public access block: ignore public ACLs, block new public ACLs and policies.
    let pab = |acls: bool, ignore: bool, policy: bool, restrict: bool| {
        PublicAccessBlockConfiguration::builder()
            .block_public_acls(acls)
            .ignore_public_acls(ignore)
            .block_public_policy(policy)
            .restrict_public_buckets(restrict)
            .build()
    };
    let e = root
        .get_public_access_block()
        .bucket("shared")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        (code(&e).as_str(), status(&e)),
        ("NoSuchPublicAccessBlockConfiguration", 404)
    );
    root.put_public_access_block()
        .bucket("shared")
        .public_access_block_configuration(pab(false, true, false, false))
        .send()
        .await
        .unwrap();
    assert_eq!(anon("GET", &url("/open")).await.0, 403, "public grants ignored");
    assert_eq!(anon("PUT", &url("/dropbox2")).await.0, 403);
    assert!(
        bob.get_object().bucket("shared").key("closed").send().await.is_ok(),
        "grants to a key still count"
    );

    root.put_public_access_block()
        .bucket("shared")
        .public_access_block_configuration(pab(true, false, true, false))
        .send()
        .await
        .unwrap();
    let got = root.get_public_access_block().bucket("shared").send().await.unwrap();
    let c = got.public_access_block_configuration().unwrap();
    assert_eq!(
        (
            c.block_public_acls(),
            c.ignore_public_acls(),
            c.block_public_policy(),
            c.restrict_public_buckets()
        ),
        (Some(true), Some(false), Some(true), Some(false))
    );
    let e = root
        .put_object()
        .bucket("shared")
        .key("x")
        .acl(ObjectCannedAcl::PublicRead)
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDenied");
    let e = root
        .put_bucket_acl()
        .bucket("shared")
        .acl(BucketCannedAcl::PublicRead)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDenied");
    let public = r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::shared/*"}]}"#;
    let e = root
        .put_bucket_policy()
        .bucket("shared")
        .policy(public)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDenied");
    // A private ACL is still fine.
    root.put_object()
        .bucket("shared")
        .key("x")
        .acl(ObjectCannedAcl::Private)
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap();

    // RestrictPublicBuckets: an existing public policy stops serving anonymous callers.
    root.delete_public_access_block().bucket("shared").send().await.unwrap();
    root.put_bucket_policy()
        .bucket("shared")
        .policy(public)
        .send()
        .await
        .unwrap();
    assert_eq!(anon("GET", &url("/closed")).await.0, 200);
    root.put_public_access_block()
        .bucket("shared")
        .public_access_block_configuration(pab(false, false, false, true))
        .send()
        .await
        .unwrap();
    assert_eq!(anon("GET", &url("/closed")).await.0, 403);
    root.delete_public_access_block().bucket("shared").send().await.unwrap();
    assert_eq!(anon("GET", &url("/closed")).await.0, 200);
}
