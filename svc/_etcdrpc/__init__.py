"""etcd3's protobuf modules, regenerated for protobuf 4+ (see _generate.py). Loaded by svc._etcd."""
