//! The handlers (with and without the project in the path) and the router.

use super::*;

/// List the project's messages (3.5+: filters, sort, paging).
#[utoipa::path(get, path = "/v3/{project_id}/messages", tag = "user messages",
    params(("project_id" = String, Path, description = "The caller's project (admins: any)"),
        ("OpenStack-API-Version" = Option<String>, Header, description = "volume 3.3 .. volume 3.71, or latest"),
        ("limit" = Option<usize>, Query, description = "3.5+: 0..1000, default 1000"),
        ("marker" = Option<String>, Query), ("offset" = Option<usize>, Query),
        ("sort" = Option<String>, Query, description = "key[:asc|desc],..., default created_at:desc"),
        ("sort_key" = Option<String>, Query), ("sort_dir" = Option<String>, Query),
        ("resource_uuid" = Option<String>, Query), ("resource_type" = Option<String>, Query),
        ("event_id" = Option<String>, Query), ("request_id" = Option<String>, Query),
        ("message_level" = Option<String>, Query)),
    responses((status = 200, body = MessageListOut), (status = 400, body = CinderErrorOut),
        (status = 404, body = CinderErrorOut), (status = 406, body = CinderErrorOut),
        (status = 503, body = CinderErrorOut)))]

pub(crate) async fn list_messages(
    State(state): State<AppState>,
    scope: Scope,
    headers: HeaderMap,
    CinderQuery(query): CinderQuery,
) -> Result<Json<MessageListOut>, CinderError> {
    let params = if scope.version >= LIST_PARAMS_VERSION {
        ListParams::parse(&query, scope.identity.is_admin())?
    } else {
        ListParams::default()
    };
    let all = state.store.list_user_messages(&scope.project).await?;
    let (page, more) = params.page(all)?;
    let base = base_url(&headers, &state.config.public_url);
    let messages_links = match page.last() {
        Some(last) if more => {
            let mut next = form_urlencoded::Serializer::new(String::new());
            for (k, v) in query.iter().filter(|(k, _)| k != "marker" && k != "offset") {
                next.append_pair(k, v);
            }
            next.append_pair("marker", &last.id.as_hyphenated().to_string());
            Some(vec![MessageLinkOut {
                rel: "next".into(),
                href: format!("{base}/v3/{}/messages?{}", scope.project, next.finish()),
            }])
        }
        _ => None,
    };
    Ok(Json(MessageListOut {
        messages: page
            .into_iter()
            .map(|m| view(m, &base, &scope.project))
            .collect(),
        messages_links,
    }))
}

/// List the caller's messages (project from the identity).
#[utoipa::path(get, path = "/v3/messages", tag = "user messages",
    params(("OpenStack-API-Version" = Option<String>, Header),
        ("limit" = Option<usize>, Query), ("marker" = Option<String>, Query),
        ("offset" = Option<usize>, Query), ("sort" = Option<String>, Query)),
    responses((status = 200, body = MessageListOut), (status = 400, body = CinderErrorOut),
        (status = 404, body = CinderErrorOut), (status = 503, body = CinderErrorOut)))]
pub(crate) async fn list_own_messages(
    state: State<AppState>,
    scope: Scope,
    headers: HeaderMap,
    query: CinderQuery,
) -> Result<Json<MessageListOut>, CinderError> {
    list_messages(state, scope, headers, query).await
}

/// Show one message.
#[utoipa::path(get, path = "/v3/{project_id}/messages/{id}", tag = "user messages",
    params(("project_id" = String, Path), ("id" = String, Path),
        ("OpenStack-API-Version" = Option<String>, Header)),
    responses((status = 200, body = MessageShowOut), (status = 400, body = CinderErrorOut),
        (status = 404, body = CinderErrorOut), (status = 503, body = CinderErrorOut)))]
pub(crate) async fn show_message(
    State(state): State<AppState>,
    scope: Scope,
    headers: HeaderMap,
) -> Result<Json<MessageShowOut>, CinderError> {
    let id = scope.message_id()?;
    let message = state
        .store
        .get_user_message(&scope.project, &id)
        .await?
        .ok_or_else(|| message_not_found(&id.to_string()))?;
    let base = base_url(&headers, &state.config.public_url);
    Ok(Json(MessageShowOut {
        message: view(message, &base, &scope.project),
    }))
}

/// Show one of the caller's messages (project from the identity).
#[utoipa::path(get, path = "/v3/messages/{id}", tag = "user messages",
    params(("id" = String, Path), ("OpenStack-API-Version" = Option<String>, Header)),
    responses((status = 200, body = MessageShowOut), (status = 404, body = CinderErrorOut),
        (status = 503, body = CinderErrorOut)))]
pub(crate) async fn show_own_message(
    state: State<AppState>,
    scope: Scope,
    headers: HeaderMap,
) -> Result<Json<MessageShowOut>, CinderError> {
    show_message(state, scope, headers).await
}

/// Delete one message (`member` or `admin`).
#[utoipa::path(delete, path = "/v3/{project_id}/messages/{id}", tag = "user messages",
    params(("project_id" = String, Path), ("id" = String, Path),
        ("OpenStack-API-Version" = Option<String>, Header)),
    responses((status = 204, description = "Deleted"), (status = 400, body = CinderErrorOut),
        (status = 403, body = CinderErrorOut), (status = 404, body = CinderErrorOut),
        (status = 503, body = CinderErrorOut)))]
pub(crate) async fn delete_message(
    State(state): State<AppState>,
    scope: Scope,
) -> Result<StatusCode, CinderError> {
    let id = scope.message_id()?;
    if !scope.identity.can_write() {
        // As Cinder: an absent message is 404 before the policy check.
        return match state.store.get_user_message(&scope.project, &id).await? {
            Some(_) => Err(policy_forbids("delete")),
            None => Err(message_not_found(&id.to_string())),
        };
    }
    if state.store.delete_user_message(&scope.project, &id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(message_not_found(&id.to_string()))
    }
}

/// Delete one of the caller's messages (project from the identity).
#[utoipa::path(delete, path = "/v3/messages/{id}", tag = "user messages",
    params(("id" = String, Path), ("OpenStack-API-Version" = Option<String>, Header)),
    responses((status = 204, description = "Deleted"), (status = 403, body = CinderErrorOut),
        (status = 404, body = CinderErrorOut), (status = 503, body = CinderErrorOut)))]
pub(crate) async fn delete_own_message(
    state: State<AppState>,
    scope: Scope,
) -> Result<StatusCode, CinderError> {
    delete_message(state, scope).await
}

/// Create a message from the permitted messages catalog (`admin` only; *Herald*).
#[utoipa::path(post, path = "/v3/{project_id}/messages", tag = "user messages",
    params(("project_id" = String, Path), ("OpenStack-API-Version" = Option<String>, Header)),
    request_body = CreateUserMessage,
    responses((status = 201, body = MessageShowOut, headers(("Location" = String))),
        (status = 400, body = CinderErrorOut), (status = 403, body = CinderErrorOut),
        (status = 413, body = CinderErrorOut), (status = 503, body = CinderErrorOut)))]
pub(crate) async fn create_message(
    State(state): State<AppState>,
    scope: Scope,
    headers: HeaderMap,
    body: Result<RawBody, ApiError>,
) -> Result<Response, CinderError> {
    if !scope.identity.is_admin() {
        return Err(policy_forbids("create"));
    }
    let doc: serde_json::Value = body?.limit(MAX_CREATE_BODY)?.json()?;
    if let Some((key, _)) = doc
        .as_object()
        .and_then(|o| o.iter().find(|(_, v)| !(v.is_string() || v.is_null())))
    {
        return Err(CinderError::bad_request(format!("{key} must be a string.")));
    }
    let mut req: CreateUserMessage = serde_json::from_value(doc)
        .map_err(|e| CinderError::bad_request(format!("Invalid user message: {e}.")))?;
    match &req.project_id {
        Some(p) if p != scope.project.as_str() => {
            return Err(CinderError::bad_request(
                "project_id in the body does not match the project in the URL.",
            ))
        }
        _ => req.project_id = Some(scope.project.to_string()),
    }
    let message = state.user_messages.create(req).await?;
    let base = base_url(&headers, &state.config.public_url);
    let out = view(message, &base, &scope.project);
    let location = out.links[0].href.clone();
    let mut res = (StatusCode::CREATED, Json(MessageShowOut { message: out })).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    Ok(res)
}

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(list_versions))
        .route("/v3", get(show_v3_version))
        .route("/v3/", get(show_v3_version))
        .route("/v3/messages", get(list_own_messages))
        .route(
            "/v3/messages/{id}",
            get(show_own_message).delete(delete_own_message),
        )
        .route(
            "/v3/{project_id}/messages",
            get(list_messages).post(create_message),
        )
        .route(
            "/v3/{project_id}/messages/{id}",
            get(show_message).delete(delete_message),
        )
}
