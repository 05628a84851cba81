//! Signature domain separation, verified types, certificates and TLS identities.
#![allow(clippy::unwrap_used)]

use pbft_crypto::*;
use pbft_types::*;

const CLUSTER: ClusterId = ClusterId(77);

struct Cluster {
    config: ClusterConfig,
    keyring: Keyring,
    replicas: Vec<Signer<ReplicaId>>,
    client: Signer<ClientId>,
}

fn cluster(n: usize) -> Cluster {
    let keys: Vec<SecretKey> = (0..n)
        .map(|i| SecretKey::from_seed([i as u8 + 1; 32]))
        .collect();
    let client_key = SecretKey::from_seed([200; 32]);
    let config = ClusterConfig {
        cluster_id: CLUSTER,
        replicas: keys
            .iter()
            .enumerate()
            .map(|(i, k)| ReplicaEntry {
                id: ReplicaId(i as u32),
                public_key: k.public_key(),
                address: format!("127.0.0.1:{}", 9000 + i),
            })
            .collect(),
        clients: vec![ClientEntry {
            id: ClientId(5),
            public_key: client_key.public_key(),
        }],
    }
    .validated()
    .unwrap();
    Cluster {
        keyring: Keyring::new(&config).unwrap(),
        replicas: keys
            .into_iter()
            .enumerate()
            .map(|(i, k)| Signer::new(k, CLUSTER, ReplicaId(i as u32)))
            .collect(),
        client: Signer::new(client_key, CLUSTER, ClientId(5)),
        config,
    }
}

fn prepare(view: u64, seq: u64) -> Prepare {
    Prepare {
        view: View(view),
        seq: SeqNo(seq),
        digest: Digest([1; 32]),
    }
}

#[test]
fn a_signature_verifies_for_its_signer_only() {
    let c = cluster(4);
    let signed = c.replicas[1].sign(prepare(0, 1)).unwrap();
    assert!(c.keyring.verify(signed.clone()).is_ok());
    // Claimed by another replica: the signer is part of what is signed.
    let mut forged = signed;
    forged.signer = ReplicaId(2);
    assert!(matches!(
        c.keyring.verify(forged),
        Err(CryptoError::BadSignature {
            signer: Principal::Replica(ReplicaId(2))
        })
    ));
}

#[test]
fn a_signature_does_not_carry_over_to_another_view_seq_or_digest() {
    let c = cluster(4);
    let signed = c.replicas[1].sign(prepare(3, 10)).unwrap();
    for value in [
        prepare(4, 10),
        prepare(3, 11),
        Prepare {
            digest: Digest([2; 32]),
            ..prepare(3, 10)
        },
    ] {
        let moved = Signed {
            value,
            ..signed.clone()
        };
        assert!(c.keyring.verify(moved).is_err());
    }
}

#[test]
fn a_signature_does_not_carry_over_to_another_kind() {
    // A commit with the very same fields as a prepare: the kind tag differs.
    let c = cluster(4);
    let p = c.replicas[1].sign(prepare(3, 10)).unwrap();
    let commit = Signed {
        value: Commit {
            view: View(3),
            seq: SeqNo(10),
            digest: Digest([1; 32]),
        },
        signer: p.signer,
        signature: p.signature,
    };
    assert!(matches!(
        c.keyring.verify(commit),
        Err(CryptoError::BadSignature { .. })
    ));
}

#[test]
fn a_signature_does_not_carry_over_to_another_cluster() {
    let c = cluster(4);
    let other_config = ClusterConfig {
        cluster_id: ClusterId(78),
        ..c.config.clone()
    };
    let other = Keyring::new(&other_config).unwrap();
    let signed = c.replicas[1].sign(prepare(0, 1)).unwrap();
    assert!(other.verify(signed.clone()).is_err());
    assert!(c.keyring.verify(signed).is_ok());
}

#[test]
fn client_requests_verify_and_unknown_clients_are_refused() {
    let c = cluster(4);
    let req = Request {
        request_no: RequestNo(1),
        read_only: false,
        op: b"put k v".to_vec(),
    };
    let signed = c.client.sign(req.clone()).unwrap();
    assert!(c.keyring.verify(signed.clone()).is_ok());
    let stranger = Signer::new(SecretKey::from_seed([99; 32]), CLUSTER, ClientId(6));
    assert!(matches!(
        c.keyring.verify(stranger.sign(req.clone()).unwrap()),
        Err(CryptoError::UnknownSigner(Principal::Client(ClientId(6))))
    ));
    // A primary that alters the operation breaks the client's signature.
    let mut altered = signed;
    altered.value.op = b"put k w".to_vec();
    assert!(c.keyring.verify(altered).is_err());
}

#[test]
fn unknown_replica_is_refused() {
    let c = cluster(4);
    let outsider = Signer::new(SecretKey::from_seed([50; 32]), CLUSTER, ReplicaId(4));
    assert!(matches!(
        c.keyring.verify(outsider.sign(prepare(0, 1)).unwrap()),
        Err(CryptoError::UnknownSigner(Principal::Replica(ReplicaId(4))))
    ));
}

#[test]
fn non_canonical_signature_is_refused() {
    let c = cluster(4);
    let mut signed = c.replicas[0].sign(prepare(0, 1)).unwrap();
    // Add the group order l to s: same value mod l, non-canonical encoding.
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut carry = 0u16;
    for (s, l) in signed.signature.0[32..].iter_mut().zip(L) {
        let sum = u16::from(*s) + u16::from(l) + carry;
        *s = sum as u8;
        carry = sum >> 8;
    }
    assert!(c.keyring.verify(signed.clone()).is_err());
    assert!(c
        .keyring
        .verify_batch(vec![signed])
        .into_iter()
        .all(|r| r.is_err()));
}

#[test]
fn batch_verification_finds_the_bad_one() {
    let c = cluster(4);
    let mut batch: Vec<_> = (0..64)
        .map(|i| {
            c.client
                .sign(Request {
                    request_no: RequestNo(i),
                    read_only: false,
                    op: vec![i as u8],
                })
                .unwrap()
        })
        .collect();
    assert!(c
        .keyring
        .verify_batch(batch.clone())
        .iter()
        .all(Result::is_ok));
    batch[17].value.op = b"forged".to_vec();
    let results = c.keyring.verify_batch(batch);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.is_ok(), i != 17, "item {i}");
    }
}

#[test]
fn certificate_from_quorum_of_distinct_votes() {
    let c = cluster(4);
    let votes: Vec<_> = (0..3)
        .map(|i| {
            c.keyring
                .verify(c.replicas[i].sign(prepare(0, 1)).unwrap())
                .unwrap()
        })
        .collect();
    let cert = c.keyring.certify(votes, c.config.quorum()).unwrap();
    assert_eq!(
        cert.signers().collect::<Vec<_>>(),
        vec![ReplicaId(0), ReplicaId(1), ReplicaId(2)]
    );
    // It verifies when it comes back from the wire.
    let wire = cert.into_cert();
    assert!(c.keyring.verify_cert(wire, 3).is_ok());
}

#[test]
fn certificate_refuses_duplicates_shortfalls_and_mismatches() {
    let c = cluster(4);
    let v = |i: usize, seq: u64| {
        c.keyring
            .verify(c.replicas[i].sign(prepare(0, seq)).unwrap())
            .unwrap()
    };
    assert!(matches!(
        c.keyring.certify([v(0, 1), v(1, 1), v(1, 1)], 3),
        Err(CryptoError::DuplicateSigner(ReplicaId(1)))
    ));
    assert!(matches!(
        c.keyring.certify([v(0, 1), v(1, 1)], 3),
        Err(CryptoError::NotEnoughSigners { needed: 3, got: 2 })
    ));
    assert!(matches!(
        c.keyring.certify([v(0, 1), v(1, 1), v(2, 2)], 3),
        Err(CryptoError::MismatchedContent)
    ));
    assert!(matches!(
        c.keyring.certify(Vec::<Verified<Prepare>>::new(), 0),
        Err(CryptoError::NotEnoughSigners { needed: 1, got: 0 })
    ));
}

#[test]
fn wire_certificate_checks() {
    let c = cluster(7);
    let quorum = c.config.quorum();
    assert_eq!(quorum, 5);
    let sig = |i: usize| {
        (
            ReplicaId(i as u32),
            c.replicas[i].sign(prepare(2, 9)).unwrap().signature,
        )
    };
    let good = QuorumCert {
        value: prepare(2, 9),
        signatures: (0..5).map(sig).collect(),
    };
    assert!(c.keyring.verify_cert(good.clone(), quorum).is_ok());

    // One signer twice to pad the count.
    let mut dup = good.clone();
    dup.signatures[4] = sig(3);
    assert!(matches!(
        c.keyring.verify_cert(dup, quorum),
        Err(CryptoError::DuplicateSigner(_))
    ));

    // Too few.
    let mut short = good.clone();
    short.signatures.pop();
    assert!(matches!(
        c.keyring.verify_cert(short, quorum),
        Err(CryptoError::NotEnoughSigners { needed: 5, got: 4 })
    ));

    // An unknown signer id.
    let mut unknown = good.clone();
    unknown
        .signatures
        .push((ReplicaId(9), unknown.signatures[0].1));
    assert!(matches!(
        c.keyring.verify_cert(unknown, quorum),
        Err(CryptoError::UnknownSigner(Principal::Replica(ReplicaId(9))))
    ));

    // Content changed after signing.
    let mut changed = good.clone();
    changed.value.seq = SeqNo(10);
    assert!(matches!(
        c.keyring.verify_cert(changed, quorum),
        Err(CryptoError::BadSignature { .. })
    ));

    // A signature moved to another signer's slot.
    let mut swapped = good;
    swapped.signatures[0].1 = swapped.signatures[1].1;
    assert!(matches!(
        c.keyring.verify_cert(swapped, quorum),
        Err(CryptoError::BadSignature {
            signer: Principal::Replica(ReplicaId(0))
        })
    ));
}

#[test]
fn weak_public_key_is_refused_in_config() {
    let mut config = cluster(4).config;
    // The identity point (y = 1) has small order.
    let mut weak = [0u8; 32];
    weak[0] = 1;
    config.replicas[2].public_key = PublicKeyBytes(weak);
    assert!(matches!(
        Keyring::new(&config),
        Err(CryptoError::InvalidPublicKey {
            principal: Principal::Replica(ReplicaId(2)),
            ..
        })
    ));
}

#[test]
fn tls_certificate_maps_to_exactly_one_identity() {
    let c = cluster(4);
    let replica_key = SecretKey::from_seed([3; 32]); // replica 2
    let tls = TlsIdentity::generate(&replica_key, "replica-2").unwrap();
    assert!(tls.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    assert_eq!(
        certificate_public_key(&tls.cert_der).unwrap(),
        replica_key.public_key()
    );
    assert_eq!(
        c.keyring.identify_certificate(&tls.cert_der).unwrap(),
        Principal::Replica(ReplicaId(2))
    );

    let client_tls = TlsIdentity::generate(&SecretKey::from_seed([200; 32]), "client-5").unwrap();
    // A client's certificate names the client whatever name it claims.
    assert_eq!(
        c.keyring
            .identify_certificate(&client_tls.cert_der)
            .unwrap(),
        Principal::Client(ClientId(5))
    );
    let liar = TlsIdentity::generate(&SecretKey::from_seed([200; 32]), "replica-0").unwrap();
    assert_eq!(
        c.keyring.identify_certificate(&liar.cert_der).unwrap(),
        Principal::Client(ClientId(5))
    );
}

#[test]
fn tls_certificate_rejections() {
    let c = cluster(4);
    let stranger = TlsIdentity::generate(&SecretKey::from_seed([123; 32]), "replica-1").unwrap();
    assert!(matches!(
        c.keyring.identify_certificate(&stranger.cert_der),
        Err(CryptoError::UnknownCertificateKey(_))
    ));
    assert!(matches!(
        c.keyring.identify_certificate(b"garbage"),
        Err(CryptoError::CertificateParse(_))
    ));
    let mut trailing = stranger.cert_der.clone();
    trailing.push(0);
    assert!(matches!(
        c.keyring.identify_certificate(&trailing),
        Err(CryptoError::CertificateParse(_))
    ));
    let truncated = &stranger.cert_der[..stranger.cert_der.len() / 2];
    assert!(matches!(
        c.keyring.identify_certificate(truncated),
        Err(CryptoError::CertificateParse(_))
    ));
    // A certificate with an ECDSA key is not an identity.
    let ecdsa = rcgen_ecdsa_cert();
    assert!(matches!(
        c.keyring.identify_certificate(&ecdsa),
        Err(CryptoError::CertificateKeyNotEd25519)
    ));
}

fn rcgen_ecdsa_cert() -> Vec<u8> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let params = rcgen::CertificateParams::new(vec!["x".into()]).unwrap();
    params.self_signed(&key).unwrap().der().to_vec()
}

#[test]
fn batch_digest_depends_on_order_and_content() {
    let c = cluster(4);
    let r = |i: u64| {
        c.client
            .sign_request(Request {
                request_no: RequestNo(i),
                read_only: false,
                op: vec![],
            })
            .unwrap()
    };
    let a = Batch {
        requests: vec![r(1), r(2)],
    };
    let b = Batch {
        requests: vec![r(2), r(1)],
    };
    assert_ne!(batch_digest(&a).unwrap(), batch_digest(&b).unwrap());
    assert_eq!(batch_digest(&a).unwrap(), batch_digest(&a.clone()).unwrap());
    assert_ne!(batch_digest(&Batch::default()).unwrap(), Digest::ZERO);
}

fn request(no: u64, op: &[u8]) -> Request {
    Request {
        request_no: RequestNo(no),
        read_only: false,
        op: op.to_vec(),
    }
}

/// TOCS 3.2 authenticators: each replica checks its own entry, under a key
/// both sides derive from their identity keys; nothing else passes.
#[test]
fn a_request_mac_verifies_at_each_replica_and_nothing_else_does() {
    let c = cluster(4);
    let client = RequestAuthenticator::new(c.client.clone(), &c.keyring).unwrap();
    let verifiers: Vec<RequestVerifier> = c
        .replicas
        .iter()
        .map(|r| RequestVerifier::new(r, &c.keyring).unwrap())
        .collect();
    let req = client.mac(request(7, b"put x")).unwrap();
    let Authenticator::Macs(macs) = &req.auth else {
        panic!("not MACs: {req:?}")
    };
    assert_eq!(macs.len(), 4);
    // The keys agree on both sides (static Diffie-Hellman): every replica
    // accepts its entry, and the entries differ (one key per pair).
    for v in &verifiers {
        v.verify(&req).unwrap();
    }
    let mut distinct = macs.clone();
    distinct.sort_by_key(|m| m.0);
    distinct.dedup();
    assert_eq!(distinct.len(), 4);

    // Another content, request number or claimed client: refused.
    let mut altered = req.clone();
    altered.value.op = b"put y".to_vec();
    assert!(matches!(
        verifiers[2].verify(&altered),
        Err(CryptoError::BadMac {
            client: ClientId(5)
        })
    ));
    let mut renumbered = req.clone();
    renumbered.value.request_no = RequestNo(8);
    assert!(verifiers[0].verify(&renumbered).is_err());
    let mut other_client = req.clone();
    other_client.signer = ClientId(6);
    assert!(matches!(
        verifiers[0].verify(&other_client),
        Err(CryptoError::UnknownSigner(Principal::Client(ClientId(6))))
    ));

    // An entry spoiled for replica 3 only: the others still accept.
    let mut spoiled = req.clone();
    if let Authenticator::Macs(m) = &mut spoiled.auth {
        m[3].0[0] ^= 1;
    }
    assert!(verifiers[3].verify(&spoiled).is_err());
    for v in &verifiers[..3] {
        v.verify(&spoiled).unwrap();
    }

    // Entries swapped between replicas do not verify (per-pair keys), nor
    // does an authenticator of the wrong length.
    let mut swapped = req.clone();
    if let Authenticator::Macs(m) = &mut swapped.auth {
        m.swap(0, 1);
    }
    assert!(verifiers[0].verify(&swapped).is_err());
    assert!(verifiers[1].verify(&swapped).is_err());
    let mut short = req.clone();
    if let Authenticator::Macs(m) = &mut short.auth {
        m.pop();
    }
    assert!(matches!(
        verifiers[0].verify(&short),
        Err(CryptoError::MalformedAuthenticator {
            macs: 3,
            replicas: 4,
            ..
        })
    ));

    // The same client key in another cluster derives other keys.
    let mut other_config = c.config.clone();
    other_config.cluster_id = ClusterId(78);
    let other_keyring = Keyring::new(&other_config).unwrap();
    let other = RequestAuthenticator::new(
        Signer::new(SecretKey::from_seed([200; 32]), ClusterId(78), ClientId(5)),
        &other_keyring,
    )
    .unwrap();
    let foreign = other.mac(request(7, b"put x")).unwrap();
    assert!(verifiers[0].verify(&foreign).is_err());
}

/// One verifier checks a mix: MACs alone, signatures in one batch, each
/// verdict in input order, and a bad signature does not hide good ones.
#[test]
fn mixed_authenticators_are_checked_in_input_order() {
    let c = cluster(4);
    let client = RequestAuthenticator::new(c.client.clone(), &c.keyring).unwrap();
    let verifier = RequestVerifier::new(&c.replicas[1], &c.keyring).unwrap();
    let mut requests = vec![
        client.sign(request(1, b"a")).unwrap(),
        client.mac(request(2, b"b")).unwrap(),
        client.sign(request(3, b"c")).unwrap(),
        client.mac(request(4, b"d")).unwrap(),
        client.sign(request(5, b"e")).unwrap(),
    ];
    assert!(verifier.verify_many(&requests).iter().all(Result::is_ok));
    requests[2].value.op = b"forged".to_vec();
    requests[3].value.op = b"forged".to_vec();
    let verdicts: Vec<bool> = verifier
        .verify_many(&requests)
        .iter()
        .map(Result::is_ok)
        .collect();
    assert_eq!(verdicts, [true, true, false, false, true]);
}
