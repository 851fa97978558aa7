"""hloc plug-in (loaded as ``hloc.matchers.fusion_lighterglue`` after ``fusion.hloc.register()``)."""

from hloc.utils.base_model import BaseModel

from fusion.features.matchers import LighterGlue


class FusionLighterGlue(BaseModel):
    default_conf = LighterGlue.default_conf
    required_inputs = ["keypoints0", "descriptors0", "keypoints1", "descriptors1"]

    def _init(self, conf):
        self.net = LighterGlue(conf)

    def _forward(self, data):
        return self.net(data)
