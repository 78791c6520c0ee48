"""The boto3 client, and the translation of botocore's errors into jobkit's.

A botocore client is thread-safe, a boto3 session is not, and neither survives a fork: each
`SqsClient` builds its session and client lazily, in the process that uses it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import boto3  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]
from botocore.exceptions import (  # type: ignore[import-untyped]
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ReadTimeoutError,
)

from jobkit import BrokerUnavailable, ConfigurationError, JobkitError
from jobkit.spi import redact_url
from jobkit_sqs.config import MAX_WAIT_SECONDS, SqsConfig

# Error codes that mean "the queue or message is not (or no longer) there".
GONE = frozenset(
    {
        "ReceiptHandleIsInvalid",
        "AWS.SimpleQueueService.ReceiptHandleIsInvalid",
        "MessageNotInflight",
        "AWS.SimpleQueueService.MessageNotInflight",
        "InvalidParameterValue",
    }
)
NO_QUEUE = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})
_UNAVAILABLE = frozenset(
    {
        "ServiceUnavailable",
        "InternalError",
        "InternalFailure",
        "RequestThrottled",
        "Throttling",
        "ThrottlingException",
        "KmsThrottled",
        "RequestTimeout",
    }
)
_NOT_ALLOWED = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "SignatureDoesNotMatch",
        "InvalidSecurity",
        "ExpiredToken",
    }
)


def error_code(exc: ClientError) -> str:
    code: str = exc.response.get("Error", {}).get("Code", "")
    return code


class SqsClient:
    """A lazily created boto3 SQS client for one process. Thread-safe."""

    def __init__(self, config: SqsConfig) -> None:
        self.config = config
        self._client: Any = None
        self._pid = 0
        self._lock = threading.Lock()

    def get(self) -> Any:
        if self._client is None or self._pid != os.getpid():
            with self._lock:
                if self._client is None or self._pid != os.getpid():
                    self._client = self._make()
                    self._pid = os.getpid()
        return self._client

    def _make(self) -> Any:
        cfg = self.config
        botocfg = Config(
            connect_timeout=cfg.connect_timeout,
            read_timeout=MAX_WAIT_SECONDS + 10,
            retries={"max_attempts": cfg.max_retries + 1, "mode": "standard"},
            max_pool_connections=32,
        )
        with translated("open an SQS client", cfg):
            session = boto3.session.Session(profile_name=cfg.profile, region_name=cfg.region)
            return session.client("sqs", endpoint_url=cfg.endpoint_url, config=botocfg)

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None and self._pid == os.getpid():
            client.close()


class Endpoint(Protocol):
    """Where an AWS service is reached: an `SqsConfig` or a `DynamoConfig`."""

    @property
    def endpoint_url(self) -> str | None: ...

    @property
    def region(self) -> str | None: ...


class QueueGone(JobkitError):
    """A queue jobkit had looked up does not exist any more (deleted since)."""


@contextmanager
def translated(what: str, config: Endpoint, *, service: str = "SQS") -> Iterator[None]:
    """Turn botocore's exceptions raised while doing `what` on `service` into jobkit errors."""
    where = redact_url(config.endpoint_url) if config.endpoint_url else "AWS"
    region = config.region or "the default region"
    try:
        yield
    except (
        EndpointConnectionError,
        ConnectTimeoutError,
        ReadTimeoutError,
        ConnectionClosedError,
    ) as exc:
        raise BrokerUnavailable(
            f"could not {what}: {service} at {where} ({region}) is unreachable "
            f"({type(exc).__name__}). Check endpoint_url / region and the network"
        ) from exc
    except (NoCredentialsError, PartialCredentialsError) as exc:
        raise ConfigurationError(
            f"could not {what}: no AWS credentials found. Set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, a profile (profile=...), or run with a role"
        ) from exc
    except NoRegionError as exc:
        raise ConfigurationError(
            f"could not {what}: no AWS region. Add region=... to the backend URL or set "
            "AWS_DEFAULT_REGION"
        ) from exc
    except ClientError as exc:
        code = error_code(exc)
        message = exc.response.get("Error", {}).get("Message", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in _UNAVAILABLE or status >= 500:
            raise BrokerUnavailable(
                f"could not {what}: {service} at {where} answered {code or status}: {message}"
            ) from exc
        if code in _NOT_ALLOWED:
            raise ConfigurationError(
                f"could not {what}: {service} refused the credentials or permissions ({code}): "
                f"{message}"
            ) from exc
        if code in NO_QUEUE:
            raise QueueGone(f"could not {what}: {service} answered {code}: {message}") from exc
        raise JobkitError(f"could not {what}: {service} answered {code}: {message}") from exc
    except BotoCoreError as exc:
        raise BrokerUnavailable(f"could not {what}: {type(exc).__name__}: {exc}") from exc
