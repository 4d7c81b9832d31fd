"""Sends MLServer gRPC inference requests for the lab's iris model (run by MLServer's venv python):
`python mlserver_grpc_client.py 127.0.0.1:PORT COUNT`; prints how many answered OK."""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor

import grpc
from mlserver.grpc import dataplane_pb2 as pb
from mlserver.grpc.dataplane_pb2_grpc import GRPCInferenceServiceStub


def infer(stub: GRPCInferenceServiceStub) -> bool:
    features = pb.ModelInferRequest.InferInputTensor(
        name="features", datatype="FP64", shape=[1, 4], contents=pb.InferTensorContents(fp64_contents=[6.1, 2.8, 4.7, 1.2]))
    try:
        stub.ModelInfer(pb.ModelInferRequest(model_name="iris", inputs=[features]), timeout=10)
        return True
    except grpc.RpcError:
        return False


if __name__ == "__main__":
    target, count = sys.argv[1], int(sys.argv[2])
    with grpc.insecure_channel(target) as channel:
        stub = GRPCInferenceServiceStub(channel)
        with ThreadPoolExecutor(16) as pool:
            print(sum(pool.map(lambda _: infer(stub), range(count))))
