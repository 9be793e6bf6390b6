"""End to end: the retention purge deletes finished deliveries and keeps pending ones."""
import http.client
import re
import time

from conftest import FAST_RETRY_ARGS, LOCAL_TARGET_ARGS, wait_for
from test_delivery import CAMPAIGN, connect, create_integration, setup_campaign

RETENTION_ARGS = ["--retention-ms", "1500", "--retention-interval-ms", "200"]
LEAD = {"id": "lead-retention-1", "firstName": "Jane"}


def post_event(server, **extra):
    body = {"type": "message_replied", "campaignId": CAMPAIGN["id"], "lead": LEAD}
    body.update(extra)
    return server.ok("POST", "/v1/events", body, expect=(202,))


def delivery_status(server, delivery_id):
    status, _, _ = server.request("GET", f"/v1/deliveries/{delivery_id}")
    return status


def purged_total(server):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    connection.request("GET", "/metrics")
    text = connection.getresponse().read().decode()
    connection.close()
    for line in text.splitlines():
        if line.startswith("bearhook_deliveries_purged_total "):
            return int(line.split()[1])
    raise AssertionError("no bearhook_deliveries_purged_total in /metrics")


def test_finished_deliveries_are_purged(start_server, make_recorder):
    server = start_server(LOCAL_TARGET_ARGS + FAST_RETRY_ARGS + RETENTION_ARGS)
    ok_receiver = make_recorder()
    failing_receiver = make_recorder([(500, 0, {})])
    # Retry-After keeps this delivery pending, waiting to retry, for the whole test.
    retrying_receiver = make_recorder([(503, 0, {"Retry-After": "3600"})])
    setup_campaign(server)
    by_url = {}
    for receiver, retries in ((ok_receiver, 3), (failing_receiver, 1), (retrying_receiver, 5)):
        integration = create_integration(server, receiver.url, maxRetries=retries)
        connect(server, CAMPAIGN["id"], integration["id"])
        by_url[integration["id"]] = receiver

    accepted = post_event(server)
    deliveries = {by_url[d["integrationId"]]: d["id"] for d in accepted["deliveries"]}
    succeeded = server.wait_delivery(deliveries[ok_receiver])
    failed = server.wait_delivery(deliveries[failing_receiver])
    assert succeeded["status"] == "succeeded"
    assert failed["status"] == "failed"
    assert len(failed["attempts"]) == 2
    retrying_receiver.wait_count(1)

    wait_for(lambda: delivery_status(server, deliveries[ok_receiver]) == 404,
             message="the succeeded delivery to be purged")
    wait_for(lambda: delivery_status(server, deliveries[failing_receiver]) == 404,
             message="the failed delivery to be purged")
    assert purged_total(server) >= 2
    assert re.search(r"retention: purged deliveries=[12] attempts=[1-3] ", server.log())

    time.sleep(1.0)  # past the retention, and several more passes
    pending = server.delivery(deliveries[retrying_receiver])
    assert pending["status"] == "pending"
    assert len(pending["attempts"]) == 1
    assert retrying_receiver.count() == 1


def test_expired_event_id_is_forgotten(start_server, make_recorder):
    server = start_server(LOCAL_TARGET_ARGS + FAST_RETRY_ARGS + RETENTION_ARGS)
    receiver = make_recorder()
    setup_campaign(server)
    integration = create_integration(server, receiver.url)
    connect(server, CAMPAIGN["id"], integration["id"])

    first = post_event(server, eventId="retained-1")
    assert post_event(server, eventId="retained-1") == first

    def answered_anew():
        again = post_event(server, eventId="retained-1")
        return again["eventId"] != first["eventId"]
    wait_for(answered_anew, interval=0.5, message="the event id to be purged")


def test_retention_zero_keeps_everything(start_server, make_recorder):
    server = start_server(LOCAL_TARGET_ARGS + FAST_RETRY_ARGS +
                          ["--retention-days", "0", "--retention-interval-ms", "100"])
    receiver = make_recorder()
    setup_campaign(server)
    integration = create_integration(server, receiver.url)
    connect(server, CAMPAIGN["id"], integration["id"])
    accepted = post_event(server)
    server.wait_delivery(accepted["deliveries"][0]["id"])
    time.sleep(0.5)
    assert delivery_status(server, accepted["deliveries"][0]["id"]) == 200
    assert purged_total(server) == 0
