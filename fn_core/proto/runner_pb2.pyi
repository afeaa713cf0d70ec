from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TryCall(_message.Message):
    __slots__ = ("models_call_json", "slot_hash_id", "extensions")
    class ExtensionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MODELS_CALL_JSON_FIELD_NUMBER: _ClassVar[int]
    SLOT_HASH_ID_FIELD_NUMBER: _ClassVar[int]
    EXTENSIONS_FIELD_NUMBER: _ClassVar[int]
    models_call_json: str
    slot_hash_id: str
    extensions: _containers.ScalarMap[str, str]
    def __init__(self, models_call_json: _Optional[str] = ..., slot_hash_id: _Optional[str] = ..., extensions: _Optional[_Mapping[str, str]] = ...) -> None: ...

class DataFrame(_message.Message):
    __slots__ = ("data", "eof")
    DATA_FIELD_NUMBER: _ClassVar[int]
    EOF_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    eof: bool
    def __init__(self, data: _Optional[bytes] = ..., eof: _Optional[bool] = ...) -> None: ...

class HttpHeader(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: str
    def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class HttpRespMeta(_message.Message):
    __slots__ = ("status_code", "headers")
    STATUS_CODE_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    status_code: int
    headers: _containers.RepeatedCompositeFieldContainer[HttpHeader]
    def __init__(self, status_code: _Optional[int] = ..., headers: _Optional[_Iterable[_Union[HttpHeader, _Mapping]]] = ...) -> None: ...

class CallResultStart(_message.Message):
    __slots__ = ("http",)
    HTTP_FIELD_NUMBER: _ClassVar[int]
    http: HttpRespMeta
    def __init__(self, http: _Optional[_Union[HttpRespMeta, _Mapping]] = ...) -> None: ...

class CallFinished(_message.Message):
    __slots__ = ("success", "details", "errorCode", "errorStr", "createdAt", "startedAt", "completedAt", "schedulerDuration", "executionDuration", "errorUser", "image", "imagePullWaitDuration", "ctrPrepDuration", "ctrCreateDuration", "initStartTime")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    ERRORCODE_FIELD_NUMBER: _ClassVar[int]
    ERRORSTR_FIELD_NUMBER: _ClassVar[int]
    CREATEDAT_FIELD_NUMBER: _ClassVar[int]
    STARTEDAT_FIELD_NUMBER: _ClassVar[int]
    COMPLETEDAT_FIELD_NUMBER: _ClassVar[int]
    SCHEDULERDURATION_FIELD_NUMBER: _ClassVar[int]
    EXECUTIONDURATION_FIELD_NUMBER: _ClassVar[int]
    ERRORUSER_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    IMAGEPULLWAITDURATION_FIELD_NUMBER: _ClassVar[int]
    CTRPREPDURATION_FIELD_NUMBER: _ClassVar[int]
    CTRCREATEDURATION_FIELD_NUMBER: _ClassVar[int]
    INITSTARTTIME_FIELD_NUMBER: _ClassVar[int]
    success: bool
    details: str
    errorCode: int
    errorStr: str
    createdAt: str
    startedAt: str
    completedAt: str
    schedulerDuration: int
    executionDuration: int
    errorUser: bool
    image: str
    imagePullWaitDuration: int
    ctrPrepDuration: int
    ctrCreateDuration: int
    initStartTime: int
    def __init__(self, success: _Optional[bool] = ..., details: _Optional[str] = ..., errorCode: _Optional[int] = ..., errorStr: _Optional[str] = ..., createdAt: _Optional[str] = ..., startedAt: _Optional[str] = ..., completedAt: _Optional[str] = ..., schedulerDuration: _Optional[int] = ..., executionDuration: _Optional[int] = ..., errorUser: _Optional[bool] = ..., image: _Optional[str] = ..., imagePullWaitDuration: _Optional[int] = ..., ctrPrepDuration: _Optional[int] = ..., ctrCreateDuration: _Optional[int] = ..., initStartTime: _Optional[int] = ...) -> None: ...

class ClientMsg(_message.Message):
    __slots__ = ("data",)
    TRY_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: DataFrame
    def __init__(self, data: _Optional[_Union[DataFrame, _Mapping]] = ..., **kwargs) -> None: ...

class RunnerMsg(_message.Message):
    __slots__ = ("result_start", "data", "finished")
    RESULT_START_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    result_start: CallResultStart
    data: DataFrame
    finished: CallFinished
    def __init__(self, result_start: _Optional[_Union[CallResultStart, _Mapping]] = ..., data: _Optional[_Union[DataFrame, _Mapping]] = ..., finished: _Optional[_Union[CallFinished, _Mapping]] = ...) -> None: ...

class RunnerStatus(_message.Message):
    __slots__ = ("active", "failed", "id", "details", "errorCode", "errorStr", "createdAt", "startedAt", "completedAt", "cached", "requestsReceived", "requestsHandled", "kdumpsOnDisk", "schedulerDuration", "executionDuration", "isNetworkDisabled", "customStatus", "imagePullWaitDuration", "ctrPrepDuration", "ctrCreateDuration", "initStartTime")
    class CustomStatusEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    ERRORCODE_FIELD_NUMBER: _ClassVar[int]
    ERRORSTR_FIELD_NUMBER: _ClassVar[int]
    CREATEDAT_FIELD_NUMBER: _ClassVar[int]
    STARTEDAT_FIELD_NUMBER: _ClassVar[int]
    COMPLETEDAT_FIELD_NUMBER: _ClassVar[int]
    CACHED_FIELD_NUMBER: _ClassVar[int]
    REQUESTSRECEIVED_FIELD_NUMBER: _ClassVar[int]
    REQUESTSHANDLED_FIELD_NUMBER: _ClassVar[int]
    KDUMPSONDISK_FIELD_NUMBER: _ClassVar[int]
    SCHEDULERDURATION_FIELD_NUMBER: _ClassVar[int]
    EXECUTIONDURATION_FIELD_NUMBER: _ClassVar[int]
    ISNETWORKDISABLED_FIELD_NUMBER: _ClassVar[int]
    CUSTOMSTATUS_FIELD_NUMBER: _ClassVar[int]
    IMAGEPULLWAITDURATION_FIELD_NUMBER: _ClassVar[int]
    CTRPREPDURATION_FIELD_NUMBER: _ClassVar[int]
    CTRCREATEDURATION_FIELD_NUMBER: _ClassVar[int]
    INITSTARTTIME_FIELD_NUMBER: _ClassVar[int]
    active: int
    failed: bool
    id: str
    details: str
    errorCode: int
    errorStr: str
    createdAt: str
    startedAt: str
    completedAt: str
    cached: bool
    requestsReceived: int
    requestsHandled: int
    kdumpsOnDisk: int
    schedulerDuration: int
    executionDuration: int
    isNetworkDisabled: bool
    customStatus: _containers.ScalarMap[str, str]
    imagePullWaitDuration: int
    ctrPrepDuration: int
    ctrCreateDuration: int
    initStartTime: int
    def __init__(self, active: _Optional[int] = ..., failed: _Optional[bool] = ..., id: _Optional[str] = ..., details: _Optional[str] = ..., errorCode: _Optional[int] = ..., errorStr: _Optional[str] = ..., createdAt: _Optional[str] = ..., startedAt: _Optional[str] = ..., completedAt: _Optional[str] = ..., cached: _Optional[bool] = ..., requestsReceived: _Optional[int] = ..., requestsHandled: _Optional[int] = ..., kdumpsOnDisk: _Optional[int] = ..., schedulerDuration: _Optional[int] = ..., executionDuration: _Optional[int] = ..., isNetworkDisabled: _Optional[bool] = ..., customStatus: _Optional[_Mapping[str, str]] = ..., imagePullWaitDuration: _Optional[int] = ..., ctrPrepDuration: _Optional[int] = ..., ctrCreateDuration: _Optional[int] = ..., initStartTime: _Optional[int] = ...) -> None: ...

class ConfigMsg(_message.Message):
    __slots__ = ("config",)
    class ConfigEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    config: _containers.ScalarMap[str, str]
    def __init__(self, config: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ConfigStatus(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LogRequestMsg(_message.Message):
    __slots__ = ("start", "ack", "ready")
    class Start(_message.Message):
        __slots__ = ("config",)
        class ConfigEntry(_message.Message):
            __slots__ = ("key", "value")
            KEY_FIELD_NUMBER: _ClassVar[int]
            VALUE_FIELD_NUMBER: _ClassVar[int]
            key: str
            value: str
            def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
        CONFIG_FIELD_NUMBER: _ClassVar[int]
        config: _containers.ScalarMap[str, str]
        def __init__(self, config: _Optional[_Mapping[str, str]] = ...) -> None: ...
    class Ack(_message.Message):
        __slots__ = ()
        def __init__(self) -> None: ...
    class Ready(_message.Message):
        __slots__ = ()
        def __init__(self) -> None: ...
    START_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    start: LogRequestMsg.Start
    ack: LogRequestMsg.Ack
    ready: LogRequestMsg.Ready
    def __init__(self, start: _Optional[_Union[LogRequestMsg.Start, _Mapping]] = ..., ack: _Optional[_Union[LogRequestMsg.Ack, _Mapping]] = ..., ready: _Optional[_Union[LogRequestMsg.Ready, _Mapping]] = ...) -> None: ...

class LogResponseMsg(_message.Message):
    __slots__ = ("data",)
    class Container(_message.Message):
        __slots__ = ("applicationId", "functionId", "containerId", "data")
        class Request(_message.Message):
            __slots__ = ("requestId", "data")
            class Line(_message.Message):
                __slots__ = ("timestamp", "source", "data")
                class Source(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
                    __slots__ = ()
                    STDOUT: _ClassVar[LogResponseMsg.Container.Request.Line.Source]
                    STDERR: _ClassVar[LogResponseMsg.Container.Request.Line.Source]
                STDOUT: LogResponseMsg.Container.Request.Line.Source
                STDERR: LogResponseMsg.Container.Request.Line.Source
                TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
                SOURCE_FIELD_NUMBER: _ClassVar[int]
                DATA_FIELD_NUMBER: _ClassVar[int]
                timestamp: int
                source: LogResponseMsg.Container.Request.Line.Source
                data: bytes
                def __init__(self, timestamp: _Optional[int] = ..., source: _Optional[_Union[LogResponseMsg.Container.Request.Line.Source, str]] = ..., data: _Optional[bytes] = ...) -> None: ...
            REQUESTID_FIELD_NUMBER: _ClassVar[int]
            DATA_FIELD_NUMBER: _ClassVar[int]
            requestId: str
            data: _containers.RepeatedCompositeFieldContainer[LogResponseMsg.Container.Request.Line]
            def __init__(self, requestId: _Optional[str] = ..., data: _Optional[_Iterable[_Union[LogResponseMsg.Container.Request.Line, _Mapping]]] = ...) -> None: ...
        APPLICATIONID_FIELD_NUMBER: _ClassVar[int]
        FUNCTIONID_FIELD_NUMBER: _ClassVar[int]
        CONTAINERID_FIELD_NUMBER: _ClassVar[int]
        DATA_FIELD_NUMBER: _ClassVar[int]
        applicationId: str
        functionId: str
        containerId: str
        data: _containers.RepeatedCompositeFieldContainer[LogResponseMsg.Container.Request]
        def __init__(self, applicationId: _Optional[str] = ..., functionId: _Optional[str] = ..., containerId: _Optional[str] = ..., data: _Optional[_Iterable[_Union[LogResponseMsg.Container.Request, _Mapping]]] = ...) -> None: ...
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: _containers.RepeatedCompositeFieldContainer[LogResponseMsg.Container]
    def __init__(self, data: _Optional[_Iterable[_Union[LogResponseMsg.Container, _Mapping]]] = ...) -> None: ...
