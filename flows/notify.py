"""A notice to the operators when an ingest run fails or crashes: a Prefect automation calling a webhook.

Records officers do not watch the Prefect UI. With `notify_webhook_url` set (kiroku.toml
[prefect] notify_webhook_url, or KIROKU_NOTIFY_WEBHOOK_URL; off by default),
`kiroku notify` saves a Custom Webhook notification block and an automation on the
Prefect server: every flow run entering Failed or Crashed posts a JSON message
(Japanese first) to that URL: a chat room, a mail gateway, a ticket system. The
server itself sends it, so it works whichever worker machine the run was on.
Applying it again replaces both, so it can be re-run after changing the URL.
"""

from __future__ import annotations

BLOCK_NAME = "kiroku-failed-runs"
AUTOMATION_NAME = "kiroku: 失敗・異常終了の通知 (failed or crashed runs)"
EVENTS = {"prefect.flow-run.Failed", "prefect.flow-run.Crashed"}
SUBJECT = "kiroku: 取込に失敗しました ({{ flow_run.state.name }})"
BODY = ("スキャンを保管できませんでした。隔離フォルダと理由ファイルを確認してください。\n"
        "処理: {{ flow.name }} / {{ flow_run.name }}\n"
        "状態: {{ flow_run.state.name }}: {{ flow_run.state.message }}\n"
        "(kiroku: flow run {{ flow_run.id }} did not archive its scan)")


def apply_failure_notice(webhook_url: str | None) -> str | None:
    """Create (or replace) the webhook block and the automation; remove them when url is None.

    Returns the automation id, or None when notices are off. The URL may hold a token:
    it is kept in the block on the server and never logged here.
    """
    from prefect.automations import Automation
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.client.orchestration import get_client
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import EventTrigger, Posture

    with get_client(sync_client=True) as client:
        for old in client.read_automations_by_name(AUTOMATION_NAME):
            client.delete_automation(old.id)
    if not webhook_url:
        return None
    block = CustomWebhookNotificationBlock(
        name=BLOCK_NAME, url=webhook_url, method="POST",
        json_data={"subject": "{{subject}}", "text": "{{body}}", "source": "kiroku"})
    block_id = block.save(BLOCK_NAME, overwrite=True)
    automation = Automation(
        name=AUTOMATION_NAME,
        description="ingest などの実行が失敗・異常終了したら運用担当に通知する (kiroku notify)",
        trigger=EventTrigger(expect=EVENTS, match={"prefect.resource.id": "prefect.flow-run.*"},
                             posture=Posture.Reactive, threshold=1, within=0),
        actions=[SendNotification(block_document_id=block_id, subject=SUBJECT, body=BODY)],
    ).create()
    return str(automation.id)
