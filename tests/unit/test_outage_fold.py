"""aiokafka's lines while the broker is away (as the fault suite's Kafka kill logged them, a few
hundred a second per service) fold into shared.outage's one line down; a line of aiokafka that
says something else (a rebalance) still gets through."""

from __future__ import annotations

import logging

import pytest

from shared import outage
from shared.logs import OutageFold

BROKER_AWAY = [
    ("aiokafka.consumer.fetcher", logging.ERROR, "Failed fetch messages from 1: NodeNotReadyError:"
     " Attempt to send a request to node which is not ready (node id 1)."),
    ("aiokafka.consumer.group_coordinator", logging.ERROR, "Group Coordinator Request failed:"
     " NodeNotReadyError: Attempt to send a request to node which is not ready (node id 1)."),
    ("aiokafka.producer.sender", logging.WARNING, "Got error produce response: NodeNotReadyError:"
     " Attempt to send a request to node which is not ready (node id 1)."),
    ("aiokafka.consumer.group_coordinator", logging.ERROR,
     "Heartbeat session expired - marking coordinator dead"),
    ("aiokafka.consumer.group_coordinator", logging.WARNING,
     "Marking the coordinator dead (node 1)for group e2e1.graphical."),
    ("aiokafka.consumer.group_coordinator", logging.WARNING, "Heartbeat failed for group"
     " e2e1.qa: coordinator (node 1) is either not started or not valid"),
    ("aiokafka.producer.sender", logging.WARNING, "Got error produce response on topic-partition"
     " TopicPartition(topic='e2e1.audit', partition=0), retrying. Error:"
     " <class 'aiokafka.errors.NotLeaderForPartitionError'>"),
]  # fmt: skip


def record(name: str, level: int, message: str) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, message, None, None)


@pytest.fixture
def kafka_up() -> None:
    outage.KAFKA.down_since = None


@pytest.mark.parametrize(("name", "level", "message"), BROKER_AWAY)
def test_a_line_of_the_broker_being_away_is_folded_into_kafka_down(
    kafka_up: None, name: str, level: int, message: str
) -> None:
    assert OutageFold().filter(record(name, level, message)) is False
    assert outage.KAFKA.is_down
    outage.KAFKA.down_since = None


def test_a_rebalance_line_is_not_folded(kafka_up: None) -> None:
    line = record(
        "aiokafka.consumer.group_coordinator", logging.WARNING, "Revoking previously assigned"
    )
    assert OutageFold().filter(line) is True
    assert not outage.KAFKA.is_down
