"""hloc plug-in (loaded as ``hloc.matchers.fusion_mnn`` after ``fusion.hloc.register()``)."""

from hloc.utils.base_model import BaseModel

from fusion.features.matchers import MutualNearestNeighbor


class FusionMNN(BaseModel):
    default_conf = MutualNearestNeighbor.default_conf
    required_inputs = ["descriptors0", "descriptors1"]

    def _init(self, conf):
        self.net = MutualNearestNeighbor(conf)

    def _forward(self, data):
        return self.net(data)
