package demo

import (
	"hash/fnv"
	"image"
	"math"
)

// A picture is a two-colour gradient, lit by one soft sine band, with a few
// glowing circles on top and a light vignette. Every choice comes from a
// pseudo-random stream seeded by the prompt and the image's seed, and the
// layout is in units of the image's shorter side, so one prompt gives the
// same picture at every size.

// circle is one glow: colour col blended in with weight alpha·(1−d²/r²)².
type circle struct {
	cx, cy float32 // centre, as a fraction of the width and height from the middle
	r2inv  float32 // 1/r²
	col    [3]float32
	alpha  float32
}

// sceneParams is everything render needs to draw one image.
type sceneParams struct {
	from, to   [3]float32 // gradient colours, 0..1
	gx, gy     float32    // gradient: t = 0.5 + gx·x + gy·y
	bandKX     float32    // band: 1 + bandAmp·sin(bandKX·x + bandKY·y + bandPhase)
	bandKY     float32
	bandPhase  float32
	bandAmp    float32
	vignette   float32
	circles    [5]circle
	numCircles int
}

// promptSeed is the seed used when a request asks for none (or −1): a hash
// of the prompt in A1111's seed range.
func promptSeed(prompt string) int64 {
	h := fnv.New64a()
	h.Write([]byte(prompt))
	return int64(h.Sum64() & math.MaxInt32)
}

// rng is splitmix64: tiny, fast and good enough for choosing colours.
type rng uint64

func (r *rng) next() uint64 {
	*r += 0x9e3779b97f4a7c15
	z := uint64(*r)
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

// between returns a uniform float in [lo, hi).
func (r *rng) between(lo, hi float32) float32 {
	return lo + (hi-lo)*float32(r.next()>>40)/float32(1<<24)
}

// scene chooses the picture for a prompt and seed.
func scene(prompt string, seed int64) sceneParams {
	h := fnv.New64a()
	h.Write([]byte(prompt))
	r := rng(h.Sum64() ^ uint64(seed)*0x9e3779b97f4a7c15)
	r.next()

	var s sceneParams
	hue := r.between(0, 360)
	s.from = hsl(hue, r.between(0.55, 0.80), r.between(0.58, 0.70))
	// Neighbouring hues blend cleanly; opposite ones would go muddy halfway.
	shift := r.between(35, 95)
	if r.next()&1 == 0 {
		shift = -shift
	}
	s.to = hsl(hue+shift, r.between(0.50, 0.80), r.between(0.30, 0.44))

	angle := r.between(0, 2*math.Pi)
	s.gx, s.gy = float32(math.Cos(float64(angle))), float32(math.Sin(float64(angle)))

	bandAngle := r.between(0, 2*math.Pi)
	k := r.between(1.2, 3.0) * 2 * math.Pi
	s.bandKX = k * float32(math.Cos(float64(bandAngle)))
	s.bandKY = k * float32(math.Sin(float64(bandAngle)))
	s.bandPhase = r.between(0, 2*math.Pi)
	s.bandAmp = r.between(0.03, 0.06)
	s.vignette = r.between(0.12, 0.22)

	s.numCircles = 3 + int(r.next()%3)
	accent := hue + 180 + r.between(-40, 40)
	for i := range s.numCircles {
		c := &s.circles[i]
		c.cx, c.cy = r.between(-0.4, 0.4), r.between(-0.4, 0.4)
		radius := r.between(0.14, 0.42)
		c.r2inv = 1 / (radius * radius)
		switch r.next() % 3 {
		case 0: // a near-white highlight
			c.col = hsl(hue, 0.5, 0.93)
			c.alpha = r.between(0.25, 0.45)
		case 1: // the complementary accent
			c.col = hsl(accent+r.between(-20, 20), r.between(0.6, 0.9), r.between(0.62, 0.78))
			c.alpha = r.between(0.40, 0.70)
		default: // a deeper tone of the base hue
			c.col = hsl(hue+r.between(-30, 30), r.between(0.5, 0.8), r.between(0.25, 0.40))
			c.alpha = r.between(0.30, 0.55)
		}
	}
	return s
}

// canvas is an image plus per-column scratch space, reused across a batch.
type canvas struct {
	*image.RGBA
	x, sinX, cosX []float32
}

func newCanvas(w, h int) *canvas {
	return &canvas{
		RGBA: image.NewRGBA(image.Rect(0, 0, w, h)),
		x:    make([]float32, w),
		sinX: make([]float32, w),
		cosX: make([]float32, w),
	}
}

// render draws s into c, writing straight into c.Pix.
func render(c *canvas, s sceneParams) {
	w, h := c.Rect.Dx(), c.Rect.Dy()
	unit := float32(min(w, h))
	halfW, halfH := float32(w)/2/unit, float32(h)/2/unit

	// Scale the gradient so t spans exactly 0..1 across the image.
	extent := abs32(s.gx)*halfW + abs32(s.gy)*halfH
	gx, gy := s.gx/(2*extent), s.gy/(2*extent)

	// The band's sine splits into a column part and a row part:
	// sin(a+b) = sin a·cos b + cos a·sin b.
	for x := range w {
		px := (float32(x)+0.5)/unit - halfW
		c.x[x] = px
		sa, ca := math.Sincos(float64(s.bandKX * px))
		c.sinX[x], c.cosX[x] = float32(sa), float32(ca)
	}
	// Place the circles in the same coordinates as the pixels.
	circles := s.circles
	for i := range circles {
		circles[i].cx *= 2 * halfW
		circles[i].cy *= 2 * halfH
	}
	cs := circles[:s.numCircles]
	for y := range h {
		py := (float32(y)+0.5)/unit - halfH
		sb, cb := math.Sincos(float64(s.bandKY*py + s.bandPhase))
		sinY, cosY := float32(sb), float32(cb)
		rowT := 0.5 + gy*py
		py2 := py * py
		row := c.Pix[y*c.Stride : y*c.Stride+4*w]
		for x := range w {
			px := c.x[x]
			t := clamp01(rowT + gx*px)
			t = t * t * (3 - 2*t) // smoothstep
			r := s.from[0] + (s.to[0]-s.from[0])*t
			g := s.from[1] + (s.to[1]-s.from[1])*t
			b := s.from[2] + (s.to[2]-s.from[2])*t

			light := 1 + s.bandAmp*(c.sinX[x]*cosY+c.cosX[x]*sinY)
			r, g, b = r*light, g*light, b*light

			for i := range cs {
				ci := &cs[i]
				dx, dy := px-ci.cx, py-ci.cy
				q := (dx*dx + dy*dy) * ci.r2inv
				if q < 1 {
					f := (1 - q) * (1 - q) * ci.alpha
					r += (ci.col[0] - r) * f
					g += (ci.col[1] - g) * f
					b += (ci.col[2] - b) * f
				}
			}

			v := 255 * (1 - s.vignette*(px*px+py2))
			p := row[4*x : 4*x+4 : 4*x+4]
			p[0] = toByte(r * v)
			p[1] = toByte(g * v)
			p[2] = toByte(b * v)
			p[3] = 255
		}
	}
}

func toByte(v float32) uint8 {
	if v <= 0 {
		return 0
	}
	if v >= 255 {
		return 255
	}
	return uint8(v + 0.5)
}

func clamp01(v float32) float32 {
	return min(max(v, 0), 1)
}

func abs32(v float32) float32 {
	if v < 0 {
		return -v
	}
	return v
}

// hsl converts a hue in degrees (any value) and saturation and lightness in
// 0..1 to RGB in 0..1.
func hsl(hue, sat, light float32) [3]float32 {
	hue = float32(math.Mod(float64(hue), 360))
	if hue < 0 {
		hue += 360
	}
	c := (1 - abs32(2*light-1)) * sat
	hp := hue / 60
	x := c * (1 - abs32(float32(math.Mod(float64(hp), 2))-1))
	var r, g, b float32
	switch {
	case hp < 1:
		r, g = c, x
	case hp < 2:
		r, g = x, c
	case hp < 3:
		g, b = c, x
	case hp < 4:
		g, b = x, c
	case hp < 5:
		r, b = x, c
	default:
		r, b = c, x
	}
	m := light - c/2
	return [3]float32{r + m, g + m, b + m}
}
