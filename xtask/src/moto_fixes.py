# Fixes applied to the moto server xtask starts, before it serves a request.
#
# This is the one place where the local emulator's differences from AWS are patched; nothing
# in the providers knows about them. Each fix says what moto does and what AWS does.
import sys
import time

import moto.s3.responses as _s3


def _get_bucket_versioning(self):
    # moto 5.2 answers GetBucketVersioning with a <GetBucketVersioningResponse> root element;
    # AWS (and the AWS SDK for Rust, which checks it) uses <VersioningConfiguration>.
    status = self.backend.get_bucket_versioning(self.bucket_name)
    inner = f"<Status>{status}</Status>" if status else ""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<VersioningConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        f"{inner}</VersioningConfiguration>"
    )
    return 200, {}, body


_s3.S3Response.get_bucket_versioning = _get_bucket_versioning



import importlib.abc


class _PatchAfterImport(importlib.abc.MetaPathFinder):
    """Runs `patch(module)` right after `name` is first imported. Importing moto's Lambda
    models eagerly would load a dozen other services' backends at start, and every
    `/moto-api/reset` would then reset them all: slow enough to time out under load."""

    def __init__(self, name, patch):
        self.name, self.patch = name, patch

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            self.patch(module)

        spec.loader.exec_module = exec_and_patch
        return spec


def _keep_alias_target(requested, esm):
    # AWS stores an event source mapping created on an alias ARN with that alias ARN and invokes
    # whatever version the alias points at later; moto 5.2 stores the version the alias pointed
    # at when the mapping was created, so the mapping would look retargeted on every read.
    parts = (requested or "").split(":")
    if len(parts) == 8 and not parts[7].isdigit() and parts[7] != "$LATEST":
        esm.function_arn = requested
    return esm


def _patch_lambda(models):
    create = models.LambdaBackend.create_event_source_mapping
    update = models.LambdaBackend.update_event_source_mapping

    # moto 5.2 stamps a mapping's LastModified with mktime(utcnow().timetuple()): whole
    # seconds, and hours off unless local time is UTC. AWS's is the exact time, and the local
    # stream poller starts LATEST there.
    def create_event_source_mapping(self, spec):
        esm = _keep_alias_target(spec.get("FunctionName"), create(self, spec))
        esm.last_modified = time.time()
        return esm

    def update_event_source_mapping(self, uuid, spec):
        esm = update(self, uuid, spec)
        if esm is not None:
            esm.last_modified = time.time()
            if "FunctionName" in spec:
                _keep_alias_target(spec["FunctionName"], esm)
        return esm

    models.LambdaBackend.create_event_source_mapping = create_event_source_mapping
    models.LambdaBackend.update_event_source_mapping = update_event_source_mapping

    _patch_lambda_revisions(models)


def _patch_lambda_revisions(models):
    # moto 5.2 gives a function no RevisionId and ignores the one an update carries. AWS gives
    # `$LATEST` and each version one, changes it with every change, and refuses an update that
    # carries another than the current one (PreconditionFailedException, HTTP 412): apply's
    # first write to a function carries the RevisionId its plan read, instead of reading the
    # function again under the lock.
    import uuid

    from moto.awslambda.exceptions import PreconditionFailedException

    def revision(fn):
        return fn.__dict__.setdefault("_xtask_revision_id", str(uuid.uuid4()))

    def changed(fn):
        fn._xtask_revision_id = str(uuid.uuid4())

    def check(current, body):
        wanted = (body or {}).get("RevisionId")
        if wanted and wanted != current:
            raise PreconditionFailedException(
                "The Revision Id provided does not match the latest Revision Id. "
                "Call the GetFunction/GetAlias API to retrieve the latest Revision Id"
            )

    get_configuration = models.LambdaFunction.get_configuration

    def get_configuration_with_revision(self, *args, **kwargs):
        config = get_configuration(self, *args, **kwargs)
        config["RevisionId"] = revision(self)
        return config

    models.LambdaFunction.get_configuration = get_configuration_with_revision

    def guarded(name):
        update = getattr(models.LambdaBackend, name)

        def guarded_update(self, function_name, qualifier, body):
            fn = self.get_function(function_name, qualifier)
            check(revision(fn), body)
            changed(fn)
            return update(self, function_name, qualifier, body)

        setattr(models.LambdaBackend, name, guarded_update)

    guarded("update_function_code")
    guarded("update_function_configuration")

    publish = models.LambdaBackend.publish_version

    def publish_version(self, function_name, *args, **kwargs):
        # A new version is a copy of `$LATEST` (sharing its revision until now): it gets a
        # revision of its own. With nothing to publish moto answers the newest version as is.
        latest = revision(self.get_function(function_name))
        version = publish(self, function_name, *args, **kwargs)
        if version is not None and revision(version) == latest:
            changed(version)
        return version

    models.LambdaBackend.publish_version = publish_version

    # An alias has a RevisionId of its own in moto too, but an update neither checks nor
    # changes it.
    update_alias = models.LambdaAlias.update

    def update_alias_revision(self, *args, **kwargs):
        update_alias(self, *args, **kwargs)
        self.revision_id = str(uuid.uuid4())

    models.LambdaAlias.update = update_alias_revision

    import json
    from urllib.parse import unquote

    import moto.awslambda.responses as responses

    respond_update_alias = responses.LambdaResponse.update_alias

    def checked_update_alias(self):
        body = json.loads(self.body or "{}")
        if body.get("RevisionId"):
            function_name = unquote(self.path.rsplit("/")[-3])
            alias_name = unquote(self.path.rsplit("/", 2)[-1])
            check(self.backend.get_alias(alias_name, function_name).revision_id, body)
        return respond_update_alias(self)

    responses.LambdaResponse.update_alias = checked_update_alias


sys.meta_path.insert(0, _PatchAfterImport("moto.awslambda.models", _patch_lambda))


def _patch_apigateway(models):
    patch = models.UsagePlan.apply_patch_operations

    def apply_patch_operations(self, patch_operations):
        # moto 5.2 stores a patched quota limit as the string the patch carries and a throttle
        # rate through int(), so `"12.5"` fails and GetUsagePlan answers `"limit": "5000"`,
        # which the AWS SDK for Rust rejects (AWS answers numbers: integer limit, double rate).
        patch(
            self,
            [op for op in patch_operations if op.get("path") != "/throttle/rateLimit"],
        )
        for op in patch_operations:
            if op.get("op") in ("add", "replace"):
                if op.get("path") == "/throttle/rateLimit":
                    self.throttle["rateLimit"] = float(op["value"])
                elif op.get("path") == "/quota/limit":
                    self.quota["limit"] = int(op["value"])

    models.UsagePlan.apply_patch_operations = apply_patch_operations


sys.meta_path.insert(0, _PatchAfterImport("moto.apigateway.models", _patch_apigateway))


def _patch_dynamodb_table(table):
    # moto 5.2's StreamShard.add, on every write to a table with an event source mapping, invokes
    # the mapped function synchronously through Docker (which fails here: no Docker, an error
    # logged and a CloudWatch log stream created per write) and then, because the failure
    # message is a truthy "result", empties the shard: GetRecords never sees those records and
    # sequence numbers start repeating. On AWS a write only appends to the stream; Lambda's
    # poller (locally `xtask::local::streams`) reads it. So: append, nothing else.
    def add(self, old, new):
        view = self.table.stream_specification["StreamViewType"]
        if old is None:
            event_name = "INSERT"
        elif new is None:
            event_name = "REMOVE"
        else:
            event_name = "MODIFY"
        seq = len(self.items) + self.starting_sequence_number
        self.items.append(table.StreamRecord(self.table, view, event_name, old, new, seq))

    table.StreamShard.add = add


sys.meta_path.insert(0, _PatchAfterImport("moto.dynamodb.models.table", _patch_dynamodb_table))


def _patch_dynamodb_backend(models):
    # moto serves requests on threads and checks a write's condition, then applies it, with no
    # lock: two concurrent conditional writes (or transactions) can both pass their conditions.
    # DynamoDB applies each conditional write and each transaction atomically, which is what
    # keeps an InvoiceID unique across customers (a guard item written in the same
    # transaction). One lock around every write makes moto do the same.
    import functools
    import threading

    lock = threading.RLock()
    for name in (
        "put_item",
        "update_item",
        "delete_item",
        "batch_write_item",
        "transact_write_items",
        "execute_transaction",
    ):
        original = getattr(models.DynamoDBBackend, name)

        @functools.wraps(original)
        def locked(self, *args, _original=original, **kwargs):
            with lock:
                return _original(self, *args, **kwargs)

        setattr(models.DynamoDBBackend, name, locked)


sys.meta_path.insert(0, _PatchAfterImport("moto.dynamodb.models", _patch_dynamodb_backend))


def _patch_logs_responses(responses):
    describe = responses.LogsResponse.describe_log_groups

    def describe_log_groups(self):
        # moto 5.2 ignores DescribeLogGroups' `logGroupIdentifiers` and answers every log group
        # (50 a page); AWS answers only the named ones (up to 50 names, no other filter).
        names = self._get_param("logGroupIdentifiers")
        if not names:
            return describe(self)
        import json

        groups = self.logs_backend.groups
        found = [groups[n].to_describe_dict() for n in sorted(set(names)) if n in groups]
        return json.dumps({"logGroups": found})

    responses.LogsResponse.describe_log_groups = describe_log_groups


sys.meta_path.insert(0, _PatchAfterImport("moto.logs.responses", _patch_logs_responses))


# Speed, not behaviour. moto's server takes one global lock to route every request, and under it
# lists its own package directory (`list_of_moto_modules`: ~200 `isdir` calls); that depends
# only on the installed package, so it is computed once. botocore service models are cached
# without a lock, so the first reads of a service in flight together each parsed its model
# (~0.4 s apiece for S3): the load is single-flight. With ~60 reads in flight (a plan) these
# were a third of the server's time and made each call wait for the others.
#
# Then, per request: every dispatch listed its handler class's methods (`inspect.getmembers`
# over hundreds of them) to find the action's; the classes are complete once imported (the
# patches above run on import), so the list is kept per class. And each service's Flask app
# ran in debug mode, which builds a new class per request to explain form-decoding errors; an
# error still answers 500 without it. Together: ~25% of the server's CPU for a no-op plan.
import functools
import threading

import moto.backends as _backends
import moto.core.utils as _core_utils

_moto_modules = frozenset(_backends.list_of_moto_modules())
_backends.list_of_moto_modules = lambda: _moto_modules
_load_model = _core_utils._load_service_model
_models = {}
_models_lock = threading.Lock()


def _load_service_model_once(service_name, model_name):
    with _models_lock:
        key = (service_name, model_name)
        if key not in _models:
            _models[key] = _load_model(service_name, model_name)
        return _models[key]


_core_utils._load_service_model = _load_service_model_once

import moto.core.responses as _responses
import moto.moto_server.werkzeug_app as _werkzeug_app

_responses.method_names_from_class = functools.lru_cache(maxsize=None)(
    _core_utils.method_names_from_class
)
_create_backend_app = _werkzeug_app.create_backend_app


def _create_backend_app_without_debug(service):
    app = _create_backend_app(service)
    app.debug = False
    return app


_werkzeug_app.create_backend_app = _create_backend_app_without_debug
