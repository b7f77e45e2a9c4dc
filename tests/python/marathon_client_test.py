#!/usr/bin/env python3
"""Drive a Marathon-compatible server with the independent PyPI client `marathon` (0.13.0).

Usage: marathon_client_test.py URL

Wire-compatibility evidence for Baton's dev scheduler: create, list, update, scale, tasks,
deployments (with rollback) and delete, all through `marathon.MarathonClient`, which parses every
answer strictly (an unknown key raises TypeError). Prints "ALL OK" and exits 0 on success; any
mismatch raises and exits non-zero. Run by reconciler/tests/it/dev_scheduler.rs.
"""

import collections
import collections.abc
import sys
import time

# marathon 0.13.0 predates Python 3.10, which removed these aliases; its JSON encoder needs them.
# This is the client's own incompatibility with new Pythons, not a wire difference.
if not hasattr(collections, "Iterable"):
    collections.Iterable = collections.abc.Iterable

from marathon import MarathonApp, MarathonClient  # noqa: E402
from marathon.exceptions import ConflictError, NotFoundError  # noqa: E402

APP = "/py/sleeper"
DEADLINE = 60.0


def wait(what, predicate):
    """Poll `predicate` until it returns a truthy value, or fail after DEADLINE seconds."""
    end = time.monotonic() + DEADLINE
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for: {what}")
        time.sleep(0.2)


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def no_deployments(client):
    wait("no deployment left", lambda: client.list_deployments() == [])


def main(url):
    client = MarathonClient(url, timeout=10)
    # The client asks for JSON (Accept: application/json): Marathon answers the JSON string.
    check(client.ping().strip() == b'"pong"', "ping")
    info = client.get_info()
    check(info.name == "marathon", f"info: {info}")

    # create
    created = client.create_app(
        APP,
        MarathonApp(cmd="sleep 1000", cpus=0.1, mem=16, instances=1,
                    labels={"baton.dev/owner": "py"}, env={"GREETING": "hi"}),
    )
    check(created.id == APP, f"created id: {created.id}")
    check(created.instances == 1, "created instances")
    check(len(created.deployments) == 1, f"created deployments: {created.deployments}")
    check(created.version is not None and created.version.endswith("Z"), "version")
    no_deployments(client)

    # list (with embeds and a label filter)
    apps = client.list_apps(embed_tasks=True, embed_counts=True, label="baton.dev/owner==py")
    check([a.id for a in apps] == [APP], f"list: {apps}")
    check(apps[0].tasks_running == 1 and len(apps[0].tasks) == 1, "list embeds tasks")
    check(client.list_apps(label="baton.dev/owner==nobody") == [], "label filter")
    app = client.get_app(APP, embed_tasks=True)
    check(app.env == {"GREETING": "hi"}, f"env: {app.env}")
    check(app.upgrade_strategy.minimum_health_capacity == 1, "defaults filled")
    check(app.port_definitions and app.port_definitions[0].port >= 10000, "service port assigned")

    # tasks
    tasks = client.list_tasks(APP)
    check(len(tasks) == 1 and tasks[0].state == "TASK_RUNNING", f"tasks: {tasks}")
    check(tasks[0].ports and tasks[0].started_at is not None, "task ports and start time")
    check([t.id for t in client.list_tasks()] == [tasks[0].id], "all tasks")

    # update (partial by default: labels stay)
    result = client.update_app(APP, MarathonApp(cmd="sleep 1001"))
    check("deploymentId" in result and "version" in result, f"update result: {result}")
    no_deployments(client)
    app = client.get_app(APP)
    check(app.cmd == "sleep 1001", f"updated cmd: {app.cmd}")
    check(app.labels == {"baton.dev/owner": "py"}, f"labels kept: {app.labels}")

    # scale
    client.scale_app(APP, instances=3)
    no_deployments(client)
    check(client.get_app(APP).tasks_running == 3, "scaled to 3")
    client.scale_app(APP, delta=-1)
    no_deployments(client)
    app = client.get_app(APP, embed_tasks=True)
    check(app.instances == 2 and len(app.tasks) == 2, f"scaled by -1: {app.instances}")

    # deployments: a change that cannot finish, a conflict, then a rollback
    client.update_app(APP, MarathonApp(cmd="exit 1"))
    deployments = client.list_deployments()
    check(len(deployments) == 1 and deployments[0].affected_apps == [APP], f"deployments: {deployments}")
    check(deployments[0].steps[0].actions[0].action == "RestartApplication", "restart action")
    try:
        client.update_app(APP, MarathonApp(instances=1))
        raise AssertionError("a locked app must refuse a change")
    except ConflictError:
        pass
    failure = wait("a task failure", lambda: client.get_app(APP).last_task_failure)
    check(failure.state == "TASK_FAILED", f"failure: {failure.state}")
    rollback = client.delete_deployment(deployments[0].id)
    check(rollback.get("deploymentId") not in (None, deployments[0].id), f"rollback: {rollback}")
    no_deployments(client)
    check(client.get_app(APP).cmd == "sleep 1001", "rolled back")
    check(len(client.list_versions(APP)) >= 5, "versions")

    # delete
    client.delete_app(APP)
    no_deployments(client)

    def gone():
        try:
            client.get_app(APP)
            return False
        except NotFoundError:
            return True

    wait("the app is gone", gone)
    check(client.list_tasks() == [], "no task left")
    print("ALL OK")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
