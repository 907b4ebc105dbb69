//! `mandate demo`: the real thing, run in the test process. Asserts on the
//! report, not on the printed text: the hops, each narrower than the one
//! before, the refusal, and an audit trail whose chain verifies.

#[allow(dead_code)]
#[path = "../../src/demo.rs"]
mod app;

use std::collections::BTreeSet;

use app::{HOP1_SCOPE, HOP2_SCOPE, HOP3_SCOPE, LEDGER, PAYMENT, RESEARCH};

fn set(s: &str) -> BTreeSet<&str> {
    s.split(' ').filter(|x| !x.is_empty()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_delegates_narrows_and_refuses() {
    let r = app::run().await.expect("the demo runs");
    assert_eq!(r.task_status, 200, "{}", r.answer);
    assert_eq!(
        r.answer["research"]["payment"]["paid"], false,
        "{}",
        r.answer
    );
    assert_eq!(r.hops.len(), 2, "{:?}", r.hops);

    // Hop 1: the orchestrator's own token, DPoP-bound, for the research agent.
    let h1 = &r.hops[0];
    assert_eq!(
        (h1.from.as_str(), h1.to.as_str()),
        ("orchestrator", "research-agent")
    );
    assert_eq!(h1.status, Some(200));
    assert_eq!(h1.token.scheme, "DPoP");
    assert!(h1.token.jkt.is_some());
    assert_eq!(h1.token.aud, RESEARCH);
    assert_eq!(h1.token.sub, "orchestrator");
    assert!(h1.token.act.is_empty());
    assert_eq!(set(&h1.token.scope), set(HOP1_SCOPE));

    // Hop 2: exchanged by the research agent, narrower, for the payment agent.
    let h2 = &r.hops[1];
    assert_eq!(
        (h2.from.as_str(), h2.to.as_str()),
        ("research-agent", "payment-agent")
    );
    assert_eq!(h2.status, Some(200));
    assert_eq!(h2.token.scheme, "DPoP");
    assert_ne!(
        h2.token.jkt, h1.token.jkt,
        "bound to the research agent's own key"
    );
    assert_eq!(h2.token.aud, PAYMENT);
    assert_eq!(
        h2.token.sub, "orchestrator",
        "the chain still acts for the orchestrator"
    );
    assert_eq!(h2.token.act, vec!["research-agent".to_owned()]);
    assert_eq!(set(&h2.token.scope), set(HOP2_SCOPE));
    assert!(set(&h2.token.scope).is_subset(&set(&h1.token.scope)));
    assert!(set(&h2.token.scope).len() < set(&h1.token.scope).len());
    assert!(h2.token.exp <= h1.token.exp, "never outlives its parent");

    // Hop 3: the payment agent asks for more than it holds, and is refused.
    let f = r.refusal.as_ref().expect("the last hop is refused");
    assert_eq!(f.agent, "payment-agent");
    assert_eq!(f.resource, LEDGER);
    assert_eq!(f.asked_scope, HOP3_SCOPE);
    assert!(!set(&f.held_scope).contains(HOP3_SCOPE));
    assert_eq!(f.error, "invalid_scope", "{:?}", f.description);

    // The audit trail tells the same story, and its chain verifies.
    let kinds = |kind: &str, client: &str| {
        r.audit
            .iter()
            .filter(|e| e.event.kind == kind && e.event.client_id.as_deref() == Some(client))
            .collect::<Vec<_>>()
    };
    let issued = kinds("token.issued", "orchestrator");
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0].event.jti.as_deref(), Some(h1.token.jti.as_str()));
    let exchanged = kinds("token.exchanged", "research-agent");
    assert_eq!(exchanged.len(), 1);
    assert_eq!(
        exchanged[0].event.jti.as_deref(),
        Some(h2.token.jti.as_str())
    );
    assert!(exchanged[0].event.reason.as_deref().is_some_and(|why| why
        .starts_with("acting chain: research-agent; exchanged from jti ")
        && why.ends_with(&h1.token.jti)));
    assert!(kinds("token.refused", "payment-agent").iter().any(|e| e
        .event
        .reason
        .as_deref()
        .is_some_and(|why| why.contains("payments:pay"))));
    assert!(
        r.audit
            .iter()
            .filter(|e| e.event.kind == "gateway.allowed")
            .count()
            >= 3
    );
    assert!(r.audit.iter().all(|e| e.event.kind != "gateway.denied"));
    assert_eq!(r.chain.broken, None);
    assert_eq!(r.chain.events, r.audit.len() as i64);

    // What the command prints names every hop and the refusal.
    let text = app::render(&r);
    for needle in [
        "Hop 1",
        "Hop 2",
        "Hop 3",
        "REFUSED invalid_scope",
        "Hash chain: intact",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
}
