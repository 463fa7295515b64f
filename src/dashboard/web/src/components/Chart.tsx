/** A time-series chart (uPlot) of one figure; its summary is also the chart's accessible name. */
import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';

export function Chart(props: {
  title: string;
  /** Seconds since the epoch, ascending. */
  times: number[];
  values: number[];
  unit: (v: number) => string;
  color: string;
  /** The y axis shows at least up to this. */
  floor?: number;
  testId: string;
}) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const { times, values } = props;
  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const width = (): number => Math.max(240, el.clientWidth);
    const u = new uPlot(
      {
        width: width(),
        height: 180,
        legend: { show: false },
        cursor: { show: true, drag: { x: false, y: false } },
        scales: { y: { range: (_u, _min, max) => [0, Math.max(max, props.floor ?? 0) * 1.1 || 1] } },
        axes: [
          { stroke: '#94a3b8', grid: { stroke: '#33415555' } },
          {
            stroke: '#94a3b8',
            grid: { stroke: '#33415555' },
            size: 70,
            values: (_u, vs) => vs.map((v) => props.unit(v)),
          },
        ],
        series: [{}, { label: props.title, stroke: props.color, width: 2, fill: `${props.color}33` }],
      },
      [[], []],
      el,
    );
    plot.current = u;
    const onResize = (): void => {
      u.setSize({ width: width(), height: 180 });
    };
    window.addEventListener('resize', onResize);
    return () => {
      window.removeEventListener('resize', onResize);
      u.destroy();
      plot.current = null;
    };
  }, []);
  useEffect(() => {
    plot.current?.setData([times, values]);
  }, [times, values]);
  const last = values.at(-1);
  const max = values.length ? Math.max(...values) : 0;
  const summary =
    last === undefined
      ? `${props.title}: no samples yet`
      : `${props.title}: now ${props.unit(last)}, highest ${props.unit(max)} over ${values.length} samples`;
  return (
    <figure
      class="chart"
      data-testid={props.testId}
      data-max={String(max)}
      data-last={String(last ?? '')}
      data-samples={String(values.length)}
    >
      <figcaption>
        <strong>{props.title}</strong>{' '}
        <span class="muted">
          {last === undefined ? 'no samples yet' : `now ${props.unit(last)} · max ${props.unit(max)}`}
        </span>
      </figcaption>
      <div ref={box} role="img" aria-label={summary} />
    </figure>
  );
}
