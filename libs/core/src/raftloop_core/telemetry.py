"""Broker telemetry shared by every service: message counters, dead letters, subscriber lag.

`instrument_broker` puts one service's broker on its Prometheus registry:

- FastStream's own middleware counts messages received per topic
  (`faststream_received_messages_total{app_name,handler}`), processed by status
  (`faststream_received_processed_messages_total{status}`), handler errors
  (`faststream_received_processed_messages_exceptions_total{exception_type}`), processing time,
  and messages published per topic (`faststream_published_messages_total{destination,status}`);
  `app_name` is the service;
- `raftloop_dead_letters_total{service,topic,error}` counts messages this service parked on a
  dead-letter topic (`topic` is the source topic);
- `raftloop_subscriber_lag{service,group,topic}` is, for the partitions this process is
  assigned, how far the fetch position is behind the high-water mark (known without asking
  the broker; the cluster-wide committed lag per group is hitl's `raftloop_consumer_lag`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from faststream.kafka import KafkaBroker
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from raftloop_core.messaging import DeadLetterPolicy

DEAD_LETTERS = "raftloop_dead_letters_total"
SUBSCRIBER_LAG = "raftloop_subscriber_lag"


def dead_letter_policy(broker: KafkaBroker) -> DeadLetterPolicy:
    """The dead-letter policy that `make_broker` installed on `broker`.

    Raises:
        LookupError: the broker was not made by `make_broker`.
    """
    for middleware in broker.config.broker_middlewares:
        if isinstance(middleware, DeadLetterPolicy):
            return middleware
    raise LookupError("this broker has no DeadLetterPolicy; build it with make_broker()")


def instrument_broker(broker: KafkaBroker, registry: CollectorRegistry, *, service: str) -> None:
    """Count `broker`'s messages, dead letters and subscriber lag on `registry`.

    Works before or after subscribers are registered (FastStream reads broker middlewares when
    a subscriber starts). Call it once per broker and registry.
    """
    from faststream.kafka.prometheus import KafkaPrometheusMiddleware

    policy = dead_letter_policy(broker)
    policy.counter = Counter(
        DEAD_LETTERS,
        "Messages parked on a dead-letter topic, by source topic and error class.",
        ["service", "topic", "error"],
        registry=registry,
    )
    policy.service = service
    broker.add_middleware(KafkaPrometheusMiddleware(registry=registry, app_name=service))
    registry.register(SubscriberLag(broker, service))


class SubscriberLag(Collector):
    """Lag of this process's assigned partitions, read from the consumers' own fetch state."""

    def __init__(self, broker: KafkaBroker, service: str) -> None:
        self.broker = broker
        self.service = service

    def describe(self) -> Iterable[Metric]:
        """The metric family without samples (so registering never calls `collect`)."""
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        """One sample per (group, topic): messages between fetch position and high-water mark."""
        family = self._family()
        totals: dict[tuple[str, str], int] = {}
        for subscriber in self.broker.subscribers:
            group = str(getattr(subscriber, "group_id", None) or "")
            consumer = getattr(subscriber, "consumer", None)
            for topic, lag in _lags(consumer):
                key = (group, topic)
                totals[key] = totals.get(key, 0) + lag
        for (group, topic), lag in sorted(totals.items()):
            family.add_metric([self.service, group, topic], lag)
        return [family]

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            SUBSCRIBER_LAG,
            "Messages behind the high-water mark on the partitions this process is assigned.",
            labels=["service", "group", "topic"],
        )


def _lags(consumer: object) -> Iterator[tuple[str, int]]:
    """(topic, lag) per assigned partition whose position and high-water mark are known."""
    if consumer is None:
        return
    try:
        assignment = consumer._subscription.subscription.assignment  # type: ignore[attr-defined]
        partitions = list(consumer.assignment())  # type: ignore[attr-defined]
    except (AttributeError, AssertionError):
        return  # not started, or between assignments
    for tp in partitions:
        try:
            state = assignment.state_value(tp)
            highwater = state.highwater
            if highwater is None or not state.has_valid_position:
                continue
            yield str(tp.topic), max(0, int(highwater) - int(state.position))
        except (AttributeError, AssertionError, KeyError, TypeError):
            continue
