//! Users and how they sign in: API keys and portal links (SPEC §9).

use super::*;

pub(crate) async fn api_keys_map_to_their_user_until_revoked(store: Arc<dyn Store>) {
    assert!(store.list_users().await.unwrap().is_empty(), "no users yet");
    let (first, second, other) = (ids::new_api_key(), ids::new_api_key(), ids::new_api_key());
    store
        .add_api_key("grace", &ids::hash_api_key(&first), 100)
        .await
        .unwrap();
    store
        .add_api_key("grace", &ids::hash_api_key(&second), 200)
        .await
        .unwrap();
    store
        .add_api_key("heidi", &ids::hash_api_key(&other), 300)
        .await
        .unwrap();
    let owner = |key: String| {
        let store = Arc::clone(&store);
        async move {
            store
                .user_for_api_key(&ids::hash_api_key(&key))
                .await
                .unwrap()
        }
    };
    assert_eq!(owner(first.clone()).await.as_deref(), Some("grace"));
    assert_eq!(owner(second.clone()).await.as_deref(), Some("grace"));
    assert_eq!(owner(other.clone()).await.as_deref(), Some("heidi"));
    assert_eq!(owner(ids::new_api_key()).await, None);

    let users = store.list_users().await.unwrap();
    let summary: HashSet<_> = users
        .iter()
        .map(|u| (u.username.as_str(), u.api_keys, u.created_at))
        .collect();
    assert_eq!(
        summary,
        HashSet::from([("grace", 2, 100), ("heidi", 1, 300)])
    );

    assert_eq!(store.revoke_api_keys("grace").await.unwrap(), 2);
    assert_eq!(owner(first).await, None);
    assert_eq!(owner(second).await, None);
    assert_eq!(owner(other).await.as_deref(), Some("heidi"));
    assert_eq!(store.revoke_api_keys("grace").await.unwrap(), 0);
}

fn link(store: &Arc<dyn Store>, token: &str, now: i64) -> impl Future<Output = Option<String>> {
    let (store, hash) = (Arc::clone(store), ids::hash_api_key(token));
    async move { store.user_for_portal_link(&hash, now).await.unwrap() }
}

pub(crate) async fn portal_links_sign_in_until_they_expire_and_expired_ones_are_forgotten(
    store: Arc<dyn Store>,
) {
    store
        .add_api_key("ivan", &ids::hash_api_key(&ids::new_api_key()), 0)
        .await
        .unwrap();
    let (short, long) = (ids::new_portal_link_token(), ids::new_portal_link_token());
    let add = |token: &str, expires_at: i64, now: i64| {
        let (store, hash) = (Arc::clone(&store), ids::hash_api_key(token));
        async move {
            store
                .add_portal_link("ivan", &hash, expires_at, now)
                .await
                .unwrap()
        }
    };
    assert!(add(&short, 1_010, 1_000).await);
    assert!(add(&long, 2_000, 1_000).await);
    assert_eq!(link(&store, &short, 1_009).await.as_deref(), Some("ivan"));
    assert_eq!(
        link(&store, &short, 1_010).await,
        None,
        "expired at its second"
    );
    assert_eq!(link(&store, &long, 1_010).await.as_deref(), Some("ivan"));
    assert_eq!(link(&store, &ids::new_portal_link_token(), 0).await, None);
    // A link is not an API key, nor the other way round.
    assert_eq!(
        store
            .user_for_api_key(&ids::hash_api_key(&long))
            .await
            .unwrap(),
        None
    );

    // Issuing a link at 1,500 forgets the one that expired at 1,010: asked
    // about an earlier time, it is gone all the same.
    assert!(add(&ids::new_portal_link_token(), 3_000, 1_500).await);
    assert_eq!(link(&store, &short, 1_000).await, None);
    assert_eq!(link(&store, &long, 1_500).await.as_deref(), Some("ivan"));

    // Only users that exist get links.
    let hash = ids::hash_api_key(&ids::new_portal_link_token());
    assert!(
        !store
            .add_portal_link("nobody", &hash, 2_000, 1_000)
            .await
            .unwrap()
    );
    assert_eq!(
        store.user_for_portal_link(&hash, 1_000).await.unwrap(),
        None
    );
}

pub(crate) async fn revoking_keys_ends_the_users_portal_links(store: Arc<dyn Store>) {
    for username in ["judy", "karl"] {
        store
            .add_api_key(username, &ids::hash_api_key(&ids::new_api_key()), 0)
            .await
            .unwrap();
    }
    let (judys, karls) = (ids::new_portal_link_token(), ids::new_portal_link_token());
    for (username, token) in [("judy", &judys), ("karl", &karls)] {
        assert!(
            store
                .add_portal_link(username, &ids::hash_api_key(token), 2_000, 1_000)
                .await
                .unwrap()
        );
    }
    assert_eq!(store.revoke_api_keys("judy").await.unwrap(), 1);
    assert_eq!(link(&store, &judys, 1_000).await, None);
    assert_eq!(link(&store, &karls, 1_000).await.as_deref(), Some("karl"));
}
