//! Two engines ("servers") on one PostgreSQL database issue 100 certificates requested at once:
//! each is issued once and no order is placed twice.

use std::time::Duration;

use certkeep_server::model::KeyType;
use certkeep_testsupport::pebble::{Pebble, PebbleOptions};
use certkeep_testsupport::postgres::PgCluster;
use certkeep_testsupport::proxy::{Kind, Proxy};

use crate::support::{Running, TwoServers, certificate, test_config, wait_until};

const CERTIFICATES: usize = 100;

#[tokio::test]
async fn two_engines_on_one_postgres_issue_each_certificate_once() {
    let Some(cluster) = PgCluster::shared() else {
        return;
    };
    let Some(pebble) = Pebble::start(PebbleOptions::fresh_authorizations()).await else {
        return;
    };
    let proxy = Proxy::start(&pebble.pki, pebble.port).await;
    let TwoServers {
        a,
        b,
        account,
        solvers,
    } = TwoServers::start(cluster, &pebble, &proxy, test_config()).await;
    let engine_a = Running::start(&a, Some(solvers.clone()));
    let engine_b = Running::start(&b, Some(solvers));
    let mut ids = Vec::new();
    for i in 0..CERTIFICATES {
        let state = if i % 2 == 0 { &a } else { &b };
        let cert = certificate(
            state,
            &account,
            &format!("c{i}"),
            &[&format!("h{i}.example.test")],
            KeyType::EcdsaP256,
        )
        .await;
        ids.push(cert.id);
    }
    wait_until(
        "every certificate issued",
        Duration::from_secs(150),
        || async {
            let mut done = 0;
            for id in &ids {
                if a.db
                    .certificate(*id)
                    .await
                    .unwrap()
                    .current_version_id
                    .is_some()
                {
                    done += 1;
                }
            }
            (done == CERTIFICATES).then_some(())
        },
    )
    .await;
    engine_a.stop().await;
    engine_b.stop().await;
    for id in &ids {
        assert_eq!(
            a.db.versions(*id).await.unwrap().len(),
            1,
            "certificate {id} issued once"
        );
        let orders = a.db.orders_for(*id).await.unwrap();
        assert_eq!(orders.len(), 1, "certificate {id}: one order");
        let created =
            a.db.order_events(orders[0].id)
                .await
                .unwrap()
                .iter()
                .filter(|e| e.kind == certkeep_server::model::OrderEventKind::Created)
                .count();
        assert_eq!(
            created, 1,
            "certificate {id}: the CA order was created once"
        );
    }
    assert_eq!(
        proxy.forwarded(Kind::NewOrder),
        CERTIFICATES,
        "no order placed twice"
    );
    assert_eq!(
        proxy.forwarded(Kind::Finalize),
        CERTIFICATES,
        "one finalize per version"
    );
}
