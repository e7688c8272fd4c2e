from face3d.errors import FaceSynthError
